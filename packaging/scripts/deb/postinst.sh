#!/bin/sh
# coffer postinst (deb): $1 = configure (upgrade: $2 = the old version);
# the abort-* actions of a failed upgrade or removal: nothing.
# The units are not enabled: that waits for the HSM token and its PIN.
set -e

case "$1" in
configure) upgrade=${2:+yes} ;;
*) exit 0 ;;
esac

#include accounts.sh

# Record the links that enabling the units makes, without enabling them
# (deb-systemd-helper works without systemd, under $DPKG_ROOT too): prerm
# removes them, whoever made them, and purge forgets the record.
deb-systemd-helper update-state coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket >/dev/null || :

# Only with systemd as the running init of this root: not in a chroot, a
# container build, a --root install or under another init.
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || :
	if [ -n "$upgrade" ]; then
		# Pick up the new binary; a stopped daemon stays stopped.
		deb-systemd-invoke try-restart coffer.service >/dev/null || :
	fi
fi

if [ -z "$upgrade" ]; then
	cat <<'MSG'
coffer is installed but not enabled. Set up the HSM token and its PIN
(/etc/coffer/hsm-pin, root:root 0600), then run:
  sudo systemctl enable --now coffer.socket coffer-creds.socket coffer.service
See man 8 coffer and /etc/coffer/coffer.toml.
MSG
fi
exit 0

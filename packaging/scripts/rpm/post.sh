#!/bin/sh
# coffer %post (rpm): $1 = 1 (install) or 2 (upgrade). The units are not
# enabled: that waits for the HSM token and its PIN.
set -e

case "$1" in
1) upgrade= ;;
*) upgrade=yes ;;
esac

#include accounts.sh

# Only with systemd as the running init: not in a chroot or an image build.
# As %systemd_postun_with_restart does, with systemctl (rpm systems have no
# deb-systemd-helper).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
	if [ -n "$upgrade" ]; then
		# Pick up the new binary; a stopped daemon stays stopped.
		systemctl try-restart coffer.service || :
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

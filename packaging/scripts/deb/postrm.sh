#!/bin/sh
# coffer postrm (deb): forget the removed units; on purge, the record of
# their links (deb-systemd-helper). The state (/var/lib/coffer), the config
# and the user stay, also on purge: the store holds sealed secrets that only
# the HSM can open, and deleting them is the administrator's decision.
set -e

case "$1" in
remove)
	if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || :
	fi
	;;
purge)
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper purge coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket >/dev/null || :
	fi
	;;
esac
exit 0

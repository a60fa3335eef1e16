#!/bin/sh
# coffer pre-remove (deb prerm, rpm %preun).
#   deb: $1 = remove (or upgrade, deconfigure, failed-upgrade: nothing)
#   rpm: $1 = 0 (erase) or 1 (upgrade)
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

# Stop and disable the units, only with systemd as the running init.
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now \
		coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket || :
fi
exit 0

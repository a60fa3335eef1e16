#!/bin/sh
# coffer prerm (deb): $1 = remove; upgrade, deconfigure, failed-upgrade:
# nothing (an upgrade restarts the daemon in the new postinst).
set -e

[ "$1" = remove ] || exit 0

# Stop the units, only with systemd as the running init.
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket >/dev/null || :
fi
# Disable them: remove the links recorded by the postinst (update-state),
# also those the administrator's 'systemctl enable' made, so that no link
# points at a removed unit and a reinstall starts disabled, as the first
# install does.
deb-systemd-helper disable coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket >/dev/null || :
exit 0

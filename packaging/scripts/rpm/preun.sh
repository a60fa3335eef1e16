#!/bin/sh
# coffer %preun (rpm): $1 = 0 (erase) or 1 (upgrade: nothing). As
# %systemd_preun does: stop and disable the units on erase.
set -e

[ "$1" = 0 ] || exit 0

if [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now \
		coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket || :
fi
exit 0

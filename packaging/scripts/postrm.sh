#!/bin/sh
# coffer post-remove (deb postrm, rpm %postun): forget the removed units.
# The state (/var/lib/coffer), the config and the user stay, also on purge:
# the store holds sealed secrets that only the HSM can open, and deleting
# them is the administrator's decision.
set -e

if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
fi
exit 0

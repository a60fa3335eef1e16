#!/bin/sh
# coffer %postun (rpm): forget the removed units. The state
# (/var/lib/coffer), the config and the user stay: the store holds sealed
# secrets that only the HSM can open, and deleting them is the
# administrator's decision.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
fi
exit 0

#!/usr/bin/env bash
# Checks the unit files in this directory (make systemd-check):
#  1. systemd-analyze security --offline: the exposure of coffer.service is at
#     most MAX_EXPOSURE (default 0.5, on systemd's 0-10 scale);
#  2. systemd-analyze verify --man=no: no output at all. verify exits 0 on
#     unknown keys and bad values (it only warns), so any line it prints is a
#     failure here.
# verify needs the units' world: the binaries they run and the standard
# targets. Without systemd as PID 1 it runs against a scratch root holding
# a copy of the host's unit directory, the four units, and stand-ins for
# /usr/bin/coffer and /bin/sh (verify only checks they are executable).
set -euo pipefail
cd "$(dirname "$0")"
max=${MAX_EXPOSURE:-0.5}
units=(coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket)

command -v systemd-analyze >/dev/null || { echo "systemd-analyze is missing (apt-get install systemd)" >&2; exit 1; }

# 1. Exposure. --threshold is on a 0-100 scale.
threshold=$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 + 0.5 }')
out=$(systemd-analyze security --offline=yes --no-pager --threshold="$threshold" ./coffer.service 2>&1) && rc=0 || rc=$?
score=$(sed -n 's/.*Overall exposure level for coffer.service: \([0-9.]*\).*/\1/p' <<<"$out")
if [ -z "$score" ]; then
	echo "$out" >&2
	echo "systemd-check: no exposure level in the output above" >&2
	exit 1
fi
if [ "$rc" != 0 ] || awk -v s="$score" -v m="$max" 'BEGIN { exit !(s > m) }'; then
	grep '✗' <<<"$out" >&2 || true
	echo "systemd-check: coffer.service exposure $score is over $max" >&2
	exit 1
fi
echo "coffer.service exposure: $score (max $max)"

# 2. verify in a scratch root.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd" "$root/usr/bin" "$root/bin" "$root/etc/systemd/system"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "${units[@]}" "$root/usr/lib/systemd/system/"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/coffer"
cp "$root/usr/bin/coffer" "$root/bin/sh"
chmod 0755 "$root/usr/bin/coffer" "$root/bin/sh"
out=$(systemd-analyze verify --man=no --recursive-errors=no --root="$root" "${units[@]}" 2>&1) && rc=0 || rc=$?
if [ "$rc" != 0 ] || [ -n "$out" ]; then
	echo "$out" >&2
	echo "systemd-check: systemd-analyze verify failed or warned (exit $rc)" >&2
	exit 1
fi
echo "systemd-analyze verify: ${units[*]}: no warnings"

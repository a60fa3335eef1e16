#!/usr/bin/env bash
# make systemd-test: the .deb under a real systemd (252, Debian bookworm)
# booted in a systemd-nspawn container, as README.md "Deploy with systemd"
# describes it: install, HSM token and PIN, enable the sockets, socket
# activation, Type=notify (READY, STATUS), a consumer unit that gets a bound
# secret with LoadCredential= from /run/coffer/creds.sock, an unbound one, a
# consumer started before coffer listens (243/CREDENTIALS), reload, stop, no
# payload in the journal; then an upgrade (the running daemon restarted),
# removal (units stopped and disabled) and purge.
#
# Needs root. Installs systemd-container and debootstrap if missing. The
# bookworm root (debootstrap --variant=minbase) is cached under
# $SYSTEMD_TEST_CACHE (default /var/cache/coffer-systemd-test), keyed by a
# hash of what goes into it; each run boots an overlay (or, where overlayfs
# fails, a copy) of it and throws that away.
#
# systemd is not PID 1 on the machines this runs on (no host systemd, hybrid
# cgroups), hence nspawn's --register=no --keep-unit, and nspawn is moved into
# a cgroup of its own first (removed afterwards).
#
# Environment: DEB (the package; default dist/coffer_$PKG_VERSION-$PKG_RELEASE_<arch>.deb),
# PKG_VERSION (set by make), SYSTEMD_TEST_CACHE, SYSTEMD_TEST_KEEP=1 (keep the
# scratch dir and print its path; the container is stopped all the same).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=systemd/test

t0=$SECONDS
log() { printf '[%3ds] %s\n' $((SECONDS - t0)) "$*"; }
die() { printf '[%3ds] systemd-test: FATAL: %s\n' $((SECONDS - t0)) "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, systemd-nspawn, cgroups)"

# --- the package ------------------------------------------------------------
arch=$(dpkg --print-architecture)
deb=${DEB:-dist/coffer_${PKG_VERSION:?set PKG_VERSION or DEB (make systemd-test does)}-${PKG_RELEASE:-1}_${arch}.deb}
[ -f "$deb" ] || die "$deb is missing: run make package"

# --- host tools -------------------------------------------------------------
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
	log "installing systemd-container debootstrap"
	command -v apt-get >/dev/null || die "systemd-nspawn or debootstrap is missing and there is no apt-get"
	timeout 300 apt-get update -qq
	DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq systemd-container debootstrap >/dev/null
fi
for c in systemd-nspawn debootstrap nsenter timeout flock; do
	command -v "$c" >/dev/null || die "$c is missing"
done

# --- the cached bookworm root -----------------------------------------------
suite=bookworm
include=systemd,dbus,softhsm2
# polkitd: coffer (as user coffer) restarts bound units over D-Bus on
# rotation, allowed by the package's polkit rule. Installed with apt in a
# chroot after debootstrap: debootstrap's own configure step fails on it.
extra=polkitd
# Bump when the way the root is made changes.
recipe="v1 $suite minbase $include $arch +$extra"
key=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
cache=${SYSTEMD_TEST_CACHE:-/var/cache/coffer-systemd-test}
base=$cache/$key
mkdir -p "$cache"
(
	# One builder at a time; a root without its .complete marker is a
	# half-finished one (an interrupted run): start over.
	flock -w 900 9 || die "cache lock $cache/.lock: timed out"
	if [ ! -f "$base/.complete" ]; then
		# An interrupted debootstrap may leave /proc or /sys mounted in it.
		{ findmnt -rn -o TARGET | grep -F "$base" || :; } | sort -r | xargs -r -n1 umount -l
		rm -rf --one-file-system "$base" "$base.tmp"
		log "debootstrap $suite ($include, then $extra) into $base (cold cache, about 70 s and more)"
		if ! timeout 600 debootstrap --variant=minbase --include="$include" "$suite" "$base.tmp/root" \
			>"$cache/debootstrap.log" 2>&1; then
			tail -20 "$cache/debootstrap.log" >&2
			rm -rf "$base.tmp"
			die "debootstrap failed (log: $cache/debootstrap.log)"
		fi
		log "apt-get install $extra in the new root"
		printf '#!/bin/sh\nexit 101\n' >"$base.tmp/root/usr/sbin/policy-rc.d"
		chmod 0755 "$base.tmp/root/usr/sbin/policy-rc.d"
		mount -t proc proc "$base.tmp/root/proc"
		rc=0
		DEBIAN_FRONTEND=noninteractive timeout 300 chroot "$base.tmp/root" apt-get install -y -q --no-install-recommends $extra \
			>>"$cache/debootstrap.log" 2>&1 || rc=$?
		umount "$base.tmp/root/proc"
		rm -f "$base.tmp/root/usr/sbin/policy-rc.d"
		if [ "$rc" != 0 ]; then
			tail -20 "$cache/debootstrap.log" >&2
			rm -rf "$base.tmp"
			die "apt-get install $extra failed (log: $cache/debootstrap.log)"
		fi
		# Keep the cache small: no downloaded .debs.
		rm -f "$base.tmp/root/var/cache/apt/archives/"*.deb
		printf '%s\n' "$recipe" >"$base.tmp/recipe"
		mv "$base.tmp" "$base"
		touch "$base/.complete"
	else
		log "cached root $base"
	fi
) 9>"$cache/.lock" || die "preparing the cached root failed"
[ -f "$base/.complete" ] || die "no cached root"

# --- scratch root, cgroups, cleanup -----------------------------------------
name=coffer-st-$$
scratch=$(mktemp -d /var/tmp/coffer-systemd-test.XXXXXX)
root=$scratch/merged
console=$scratch/console.log
nspawn_pid=
leader=
overlay=
cgroups=()
failed=()
passed=0

in_ct() { timeout "${TMO:-30}" nsenter -t "$leader" -a "$@"; }

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [ "$rc" != 0 ] && [ -n "$leader" ] && kill -0 "$leader" 2>/dev/null; then
		echo "--- container journal (coffer, sockets, consumers) ---" >&2
		in_ct journalctl --no-pager -o short-precise \
			-u coffer.service -u coffer.socket -u coffer-creds.socket \
			-u consumer.service -u consumer-unbound.service -u consumer-early.service -u consumer-rotate.service -u polkit.service >&2
		echo "--- failed units ---" >&2
		in_ct systemctl --no-pager --failed >&2
	fi
	if [ "$rc" != 0 ] && [ -s "$console" ]; then
		echo "--- container console (last 30 lines) ---" >&2
		tail -30 "$console" >&2
	fi
	if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
		# SIGTERM: nspawn asks the container to power off (SIGRTMIN+3).
		kill -TERM "$nspawn_pid"
		for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$nspawn_pid" 2>/dev/null && { echo "nspawn did not stop in 10 s: killing the container" >&2; kill -KILL "$nspawn_pid"; }
	fi
	# Whatever is left in the container's cgroups, then the cgroups.
	local cg
	for cg in "${cgroups[@]}"; do
		[ -e "$cg/cgroup.kill" ] && echo 1 >"$cg/cgroup.kill" 2>/dev/null
	done
	for cg in "${cgroups[@]}"; do
		[ -d "$cg" ] || continue
		for _ in $(seq 50); do
			find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
			[ -d "$cg" ] || break
			find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r p; do kill -KILL "$p" 2>/dev/null; done
			sleep 0.1
		done
		[ -d "$cg" ] && echo "systemd-test: could not remove cgroup $cg" >&2
	done
	rmdir "/run/systemd/nspawn/propagate/$name" 2>/dev/null
	if [ -n "$overlay" ]; then
		umount "$root" 2>/dev/null || umount -l "$root"
	fi
	if [ "${SYSTEMD_TEST_KEEP:-}" = 1 ]; then
		echo "systemd-test: kept $scratch" >&2
	else
		rm -rf "$scratch"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Overlay on the cached root; a full copy where overlayfs does not work.
mkdir -p "$scratch/upper" "$scratch/work" "$root"
if mount -t overlay overlay -o "lowerdir=$base/root,upperdir=$scratch/upper,workdir=$scratch/work" "$root" 2>/dev/null; then
	overlay=1
	log "scratch root: overlay on $base/root at $root"
else
	cp -a --reflink=auto "$base/root/." "$root/"
	log "scratch root: copy of $base/root at $root"
fi
cp "$deb" "$root/root/coffer.deb"
install -m 0644 "$here"/units/*.service "$root/etc/systemd/system/"

# A cgroup of its own for nspawn (it puts the container in payload/ below it).
if [ -d /sys/fs/cgroup/unified ] && [ -d /sys/fs/cgroup/systemd ]; then
	cgroups=(/sys/fs/cgroup/systemd/"$name" /sys/fs/cgroup/unified/"$name")  # hybrid
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
	cgroups=(/sys/fs/cgroup/"$name")                                         # unified
else
	die "unknown cgroup layout under /sys/fs/cgroup"
fi
mkdir "${cgroups[@]}"

# --- boot ---------------------------------------------------------------------
log "booting $name"
boot0=$(date +%s%N)
# --private-network: the container gets its own network namespace and
# CAP_NET_ADMIN, as systemd on a host has (PrivateNetwork= units can then set
# up their loopback device).
# shellcheck disable=SC2016
bash -c 'r=$1 n=$2; shift 2; for cg; do echo $$ >"$cg/cgroup.procs"; done
	exec systemd-nspawn --quiet -D "$r" -b -M "$n" --register=no --keep-unit --private-network --console=pipe' \
	_ "$root" "$name" "${cgroups[@]}" </dev/null >"$console" 2>&1 &
nspawn_pid=$!
for _ in $(seq 100); do
	for c in $(pgrep -P "$nspawn_pid" 2>/dev/null); do
		[ "$(awk '/^NSpid:/ { print $NF }' "/proc/$c/status" 2>/dev/null)" = 1 ] && leader=$c
	done
	[ -n "$leader" ] && break
	kill -0 "$nspawn_pid" 2>/dev/null || die "systemd-nspawn exited: $(tail -20 "$console")"
	sleep 0.1
done
[ -n "$leader" ] || die "no container PID 1 after 10 s"
# systemctl needs the manager's socket first.
for _ in $(seq 100); do
	[ -S "/proc/$leader/root/run/systemd/private" ] && break
	kill -0 "$nspawn_pid" 2>/dev/null || die "systemd-nspawn exited: $(tail -20 "$console")"
	sleep 0.1
done
state=$(TMO=60 in_ct systemctl is-system-running --wait 2>&1) || :
boot_ms=$((($(date +%s%N) - boot0) / 1000000))

# --- checks -------------------------------------------------------------------
ok() { passed=$((passed + 1)); log "ok   $*"; }
bad() { failed+=("$*"); log "FAIL $*"; }
# check "what" command...: the command's success is the check.
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
prop() { in_ct systemctl show "$1" -p "$2" --value; }
# The coffer.service journal, captured whole (grep -q on a pipe under
# pipefail could fail on SIGPIPE).
coffer_log() { in_ct journalctl -u coffer.service -o cat --no-pager; }
coffer_log_has() { local j; j=$(coffer_log) && grep -qF -- "$1" <<<"$j"; }
# coffer_entry FIELD=VALUE...: a coffer.service journal entry with all these
# fields (the daemon logs natively: MESSAGE, PRIORITY, COFFER_<KEY>).
coffer_entry() { local out; out=$(in_ct journalctl -u coffer.service -o cat --no-pager "$@") && [ -n "$out" ]; }

case $state in
running) ok "boot: is-system-running: running (${boot_ms} ms)" ;;
degraded) ok "boot: is-system-running: degraded (${boot_ms} ms); failed units: $(in_ct systemctl --failed --plain --no-legend | awk '{ printf "%s ", $1 }')" ;;
*) die "boot: is-system-running: '$state' after ${boot_ms} ms" ;;
esac
[ "$boot_ms" -le 3000 ] || log "note: boot took ${boot_ms} ms (expected under 3 s)"
log "systemd in the container: $(in_ct systemctl --version | head -1)"

# Install.
out=$(in_ct dpkg -i /root/coffer.deb 2>&1) || { echo "$out" >&2; die "dpkg -i failed"; }
grep -q "coffer is installed but not enabled" <<<"$out" || bad "postinst message missing"
groups=" $(in_ct id -nG coffer | tr '\n' ' ') "
# shellcheck disable=SC2016 # expanded by eval
check "dpkg -i: coffer user in groups softhsm and coffer-clients ($groups)" \
	eval '[[ $groups == *" softhsm "* && $groups == *" coffer-clients "* ]]'
check "dpkg -i: unit files in /usr/lib/systemd/system" in_ct systemctl cat coffer.service coffer.socket coffer-creds.socket >/dev/null

# HSM token and PIN, as in the README. setpriv, not sudo or runuser (minbase
# has no sudo): their PAM session messages carry the command line, and with
# it the PIN, into the journal (_CMDLINE=), which the last check looks for.
pin="pin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
in_ct setpriv --reuid=coffer --regid=coffer --init-groups -- softhsm2-util --init-token --free --label coffer \
	--so-pin "so-$pin" --pin "$pin" >/dev/null || die "softhsm2-util --init-token as coffer failed"
printf '%s' "$pin" | in_ct install -m 0600 /dev/stdin /etc/coffer/hsm-pin || die "writing /etc/coffer/hsm-pin failed"
check "/etc/coffer/hsm-pin is root:root 0600" test "$(in_ct stat -c '%U:%G %a' /etc/coffer/hsm-pin)" = "root:root 600"

# Enable the sockets; the service stays down until the first connection.
in_ct systemctl enable --now coffer.socket coffer-creds.socket >/dev/null 2>&1 || die "systemctl enable --now coffer.socket coffer-creds.socket failed"
check "coffer.socket and coffer-creds.socket listening" \
	test "$(prop coffer.socket SubState) $(prop coffer-creds.socket SubState)" = "listening listening"
check "coffer.service not started before the first connection" test "$(prop coffer.service ActiveState)" = inactive
check "sockets: /run/coffer/coffer.sock root:coffer-clients 0660, creds.sock root:root 0600" \
	test "$(in_ct stat -c '%U:%G %a' /run/coffer/coffer.sock /run/coffer/creds.sock | tr '\n' ' ')" = "root:coffer-clients 660 root:root 600 "

# Socket activation, READY and STATUS.
if status=$(in_ct coffer status 2>&1); then
	ok "coffer status through /run/coffer/coffer.sock (socket activation)"
	grep -Eq '^HSM +healthy' <<<"$status" || bad "coffer status: HSM not healthy: $status"
	grep -Eq '^STORE +healthy' <<<"$status" || bad "coffer status: store not healthy: $status"
else
	echo "$status" >&2
	bad "coffer status through /run/coffer/coffer.sock"
fi
show=$(in_ct systemctl show coffer.service -p Type,ActiveState,SubState,StatusText,NotifyAccess,MainPID)
log "$(tr '\n' ' ' <<<"$show")"
check "coffer.service Type=notify, NotifyAccess=main, active/running (READY=1)" \
	test "$(grep -E '^(Type|NotifyAccess|ActiveState|SubState)=' <<<"$show" | sort | tr '\n' ' ')" = \
	"ActiveState=active NotifyAccess=main SubState=running Type=notify "
statustext=$(sed -n 's/^StatusText=//p' <<<"$show")
check "STATUS= from the daemon: '$statustext'" test -n "$statustext"
check "daemon got its sockets from systemd (LISTEN_FDNAMES: socket_activated=true)" \
	coffer_entry "MESSAGE=coffer is serving" COFFER_SOCKET_ACTIVATED=true

# A secret and its binding to consumer.service.
payload="sdt-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
created=$(printf '%s' "$payload" | in_ct coffer -o json secret create --display-name "systemd-test db password" --payload-file -) ||
	die "coffer secret create failed: $created"
id=$(sed -n 's/^  "id": "\(.*\)",\?$/\1/p' <<<"$created" | head -1)
[ -n "$id" ] || die "no secret id in: $created"
in_ct coffer secret bind "$id" --unit consumer.service --as dbpass --on-rotate restart >/dev/null || die "coffer secret bind failed"
ok "secret $id created and bound to consumer.service as dbpass (on-rotate restart)"

# The bound consumer.
if in_ct systemctl start consumer.service; then
	got=$(in_ct cat /run/consumer-out/dbpass) || got="<no file>"
	check "consumer.service (DynamicUser=yes) got exactly the payload in \$CREDENTIALS_DIRECTORY/dbpass" test "$got" = "$payload"
	uid=$(in_ct stat -c %u /run/consumer-out/dbpass)
	check "consumer.service ran as a dynamic user (uid $uid)" test "$uid" -ge 61184 -a "$uid" -le 65519
else
	bad "systemctl start consumer.service: $(prop consumer.service ExecMainStatus) $(prop consumer.service Result)"
fi

# An unbound credential: no payload. systemd 252 reads a socket that closes
# without data as an empty credential, so the unit may start with 0 bytes.
if in_ct systemctl start consumer-unbound.service 2>/dev/null; then
	n=$(in_ct stat -c %s /run/consumer-unbound-out/unbound 2>/dev/null || echo missing)
	check "consumer-unbound.service: no payload (started with an empty credential: $n bytes; systemd accepts an EOF as an empty credential)" test "$n" = 0
else
	st=$(prop consumer-unbound.service ExecMainStatus)
	check "consumer-unbound.service: failed with $st/CREDENTIALS" test "$st" = 243
fi
check "daemon logged the refusal (LoadCredential refused)" \
	coffer_entry "MESSAGE=LoadCredential refused" COFFER_UNIT=consumer-unbound.service

# Rotation reaches a running consumer: bound with the default on-rotate
# (try-restart), it is restarted by coffer over D-Bus (allowed by the
# package's polkit rule) and its new process has the new value.
rot1="rot1-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
rot2="rot2-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
created=$(printf '%s' "$rot1" | in_ct coffer -o json secret create --display-name "systemd-test rotated" --payload-file -) ||
	die "coffer secret create (rotation) failed: $created"
rid=$(sed -n 's/^  "id": "\(.*\)",\?$/\1/p' <<<"$created" | head -1)
bound=$(in_ct coffer secret bind "$rid" --unit consumer-rotate.service --as rotpass) || die "coffer secret bind (rotation) failed: $bound"
check "binding lists on-rotate try-restart (the default)" grep -Eq 'consumer-rotate\.service +rotpass +try-restart' <<<"$bound"
if in_ct systemctl start consumer-rotate.service; then
	for _ in $(seq 50); do in_ct test -s /run/consumer-rotate-out/rotpass && break; sleep 0.1; done
	got=$(in_ct cat /run/consumer-rotate-out/rotpass 2>/dev/null) || got="<no file>"
	check "consumer-rotate.service got version 1" test "$got" = "$rot1"
	rpid0=$(prop consumer-rotate.service MainPID)
	r0=$(date +%s%N)
	if out=$(printf '%s' "$rot2" | TMO=90 in_ct coffer secret rotate "$rid" --payload-file - 2>&1); then
		rot_ms=$((($(date +%s%N) - r0) / 1000000))
		log "coffer secret rotate (with the unit's restart): ${rot_ms} ms"
		check "coffer secret rotate printed 'unit consumer-rotate.service: try-restarted' ($(grep '^unit ' <<<"$out" | tr '\n' ' '))" \
			grep -qx 'unit consumer-rotate.service: try-restarted' <<<"$out"
		for _ in $(seq 50); do
			got=$(in_ct cat /run/consumer-rotate-out/rotpass 2>/dev/null) || got=
			[ "$got" = "$rot2" ] && break
			sleep 0.1
		done
		check "consumer-rotate.service sees version 2 without a manual restart" test "$got" = "$rot2"
		rpid1=$(prop consumer-rotate.service MainPID)
		check "consumer-rotate.service was restarted (MainPID $rpid0 -> $rpid1), active" \
			test "$rpid1" != "$rpid0" -a "$(prop consumer-rotate.service ActiveState)" = active
		check "daemon logged the on-rotate action (unit, result)" \
			coffer_entry "MESSAGE=on-rotate unit action" COFFER_UNIT=consumer-rotate.service COFFER_RESULT=try-restarted
	else
		bad "coffer secret rotate (bound unit): $out"
	fi
	# A stopped unit stays stopped under try-restart.
	in_ct systemctl stop consumer-rotate.service
	out=$(printf '%s' "$rot1" | in_ct coffer secret rotate "$rid" --payload-file - 2>&1) || bad "coffer secret rotate (stopped unit): $out"
	check "try-restart left the stopped consumer-rotate.service stopped" test "$(prop consumer-rotate.service ActiveState)" = inactive
else
	bad "systemctl start consumer-rotate.service: $(prop consumer-rotate.service Result)"
fi

# --on-rotate restart starts a stopped unit too.
payload2="sdt2-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
in_ct systemctl stop consumer.service
if out=$(printf '%s' "$payload2" | TMO=90 in_ct coffer secret rotate "$id" --payload-file - 2>&1); then
	check "coffer secret rotate printed 'unit consumer.service: restarted' ($(grep '^unit ' <<<"$out" | tr '\n' ' '))" \
		grep -qx 'unit consumer.service: restarted' <<<"$out"
	got=$(in_ct cat /run/consumer-out/dbpass) || got="<no file>"
	check "on-rotate restart started the stopped consumer.service with version 2" \
		test "$got" = "$payload2" -a "$(prop consumer.service ActiveState)" = active
else
	bad "coffer secret rotate (consumer.service): $out"
fi

# Reload.
pid0=$(prop coffer.service MainPID)
if in_ct systemctl reload coffer.service 2>/dev/null; then
	ok "systemctl reload coffer"
else
	bad "systemctl reload coffer: $(coffer_log | grep -m1 -E 'Failed (to|at)' || echo 'see the journal')"
fi
check "after reload: active/running, same MainPID $pid0" \
	test "$(prop coffer.service ActiveState) $(prop coffer.service SubState) $(prop coffer.service MainPID)" = "active running $pid0"
check "journal: configuration reloaded" \
	coffer_log_has "configuration reloaded"

# Stop: drained and clean.
stop_out=$(in_ct systemctl stop coffer.service 2>&1) || bad "systemctl stop coffer: $stop_out"
show=$(in_ct systemctl show coffer.service -p ActiveState,Result,ExecMainCode,ExecMainStatus | sort | tr '\n' ' ')
check "after stop: inactive, exited 0 ($show)" \
	test "$show" = "ActiveState=inactive ExecMainCode=1 ExecMainStatus=0 Result=success "
check "journal: STOPPING and drain logged" \
	coffer_log_has "draining in-flight requests"
# The sockets stayed: the next connection starts it again.
# shellcheck disable=SC2016 # expanded by eval
check "coffer status after stop starts coffer.service again" eval 'in_ct coffer status >/dev/null && test "$(prop coffer.service ActiveState)" = active'

# A consumer started while nothing listens on creds.sock: 243/CREDENTIALS.
in_ct systemctl stop coffer.service coffer.socket coffer-creds.socket 2>/dev/null || bad "systemctl stop coffer.service coffer.socket coffer-creds.socket"
if in_ct systemctl start consumer-early.service 2>/dev/null; then
	bad "consumer-early.service started without coffer listening"
else
	st=$(prop consumer-early.service ExecMainStatus)
	check "consumer-early.service (nothing listening): failed with $st/CREDENTIALS" test "$st" = 243
fi

# No payload anywhere in the journal (every field of every entry).
# (Captured first: grep -q on a pipe under pipefail could fail on SIGPIPE.)
journal=$(in_ct journalctl --no-pager -o export) || die "journalctl -o export failed"
[ -n "$journal" ] || die "empty journal"
if grep -aqF -e "$payload" -e "$payload2" -e "$rot1" -e "$rot2" <<<"$journal"; then
	bad "a payload is in the journal: $(in_ct journalctl --no-pager -o cat | grep -aF -e "$payload" -e "$payload2" -e "$rot1" -e "$rot2" | head -3)"
else
	ok "no payload (4 versions) anywhere in the journal ($(grep -ac '^__CURSOR=' <<<"$journal") entries)"
fi
# shellcheck disable=SC2016 # expanded by eval
check "the HSM PIN is nowhere in the journal" eval '! grep -aqF -- "$pin" <<<"$journal"'

# The package's life under systemd (deb-systemd-helper, deb-systemd-invoke).
# Upgrade (the same .deb again): a running daemon is restarted.
in_ct systemctl start coffer.socket coffer-creds.socket 2>/dev/null || bad "systemctl start coffer.socket coffer-creds.socket"
in_ct coffer status >/dev/null 2>&1 || bad "coffer status before the upgrade"
pid0=$(prop coffer.service MainPID)
out=$(in_ct dpkg -i /root/coffer.deb 2>&1) || { echo "$out" >&2; die "dpkg -i (upgrade) failed"; }
check "upgrade: no first-install message" eval '! grep -q "not enabled" <<<"$out"'
check "upgrade: coffer.service restarted (MainPID $pid0 -> $(prop coffer.service MainPID)), active" \
	eval 'test "$(prop coffer.service ActiveState)" = active -a "$(prop coffer.service MainPID)" != "$pid0"'
# Remove: the units stop and are disabled (no link left to a removed unit).
check "before remove: the sockets' enablement links are in /etc/systemd/system" \
	eval 'in_ct find /etc/systemd/system -name "coffer*.socket" | grep -q .'
out=$(in_ct dpkg -r coffer 2>&1) || { echo "$out" >&2; die "dpkg -r failed"; }
check "remove: coffer.service, coffer.socket, coffer-creds.socket inactive" \
	test "$(prop coffer.service ActiveState) $(prop coffer.socket ActiveState) $(prop coffer-creds.socket ActiveState)" = "inactive inactive inactive"
check "remove: no enablement link left in /etc/systemd/system" \
	eval '! in_ct find /etc/systemd/system -name "coffer*" | grep -q .'
out=$(in_ct dpkg -P coffer 2>&1) || { echo "$out" >&2; die "dpkg -P failed"; }
check "purge: deb-systemd-helper keeps no record of the units" \
	eval '! in_ct find /var/lib/systemd/deb-systemd-helper-enabled -name "coffer*" 2>/dev/null | grep -q .'

# --- result -------------------------------------------------------------------
log "boot ${boot_ms} ms, total $((SECONDS - t0)) s"
echo "systemd-test: $passed passed, ${#failed[@]} failed"
if [ "${#failed[@]}" != 0 ]; then
	printf '  FAIL %s\n' "${failed[@]}" >&2
	exit 1
fi

#!/bin/sh
# coffer post-install (deb postinst, rpm %post).
#   deb: $1 = configure (upgrade: $2 = the old version); other actions: nothing
#   rpm: $1 = 1 (install) or 2 (upgrade)
set -e

case "$1" in
configure) upgrade=${2:+yes} ;;
1) upgrade= ;;
2) upgrade=yes ;;
*) exit 0 ;;
esac

# The user, the groups and the directories. systemd-sysusers and
# systemd-tmpfiles work without systemd running (chroots, image builds) and
# honour $DPKG_ROOT (dpkg --root with chrootless scripts). Without them (no
# systemd at all), the same with the shadow tools.
root=${DPKG_ROOT:-/}
if command -v systemd-sysusers >/dev/null 2>&1; then
	# The basename: looked up in the sysusers.d directories under --root.
	systemd-sysusers --root="$root" coffer.conf
elif [ "$root" = / ]; then
	for g in coffer coffer-admins coffer-clients softhsm; do
		getent group "$g" >/dev/null || groupadd --system "$g"
	done
	getent passwd coffer >/dev/null ||
		useradd --system --gid coffer --groups softhsm,coffer-clients \
			--home-dir /var/lib/coffer --no-create-home \
			--shell /usr/sbin/nologin --comment "coffer credential daemon" coffer
else
	echo "coffer: no systemd-sysusers; create the coffer user in $root yourself" >&2
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --root="$root" --create coffer.conf
elif [ "$root" = / ]; then
	install -d -m 0755 -o root -g root /etc/coffer
	install -d -m 0700 -o coffer -g coffer /var/lib/coffer
fi

# Only with systemd as the running init of this root: not in a chroot, a
# container build, a --root install or under another init.
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
	if [ -n "$upgrade" ]; then
		# Pick up the new binary; a stopped daemon stays stopped.
		systemctl try-restart coffer.service || :
	fi
fi

if [ -z "$upgrade" ]; then
	cat <<'MSG'
coffer is installed but not enabled. Set up the HSM token and its PIN
(/etc/coffer/hsm-pin, root:root 0600), then:
  systemctl enable --now coffer.socket coffer-creds.socket coffer.service
See man 8 coffer and /etc/coffer/coffer.toml.
MSG
fi
exit 0

# The user, the groups and the directories: the part of the post-install
# that the deb and the rpm share. `make package` puts this file in place of
# the line "#include accounts.sh" of deb/postinst.sh and rpm/post.sh.
#
# systemd-sysusers and systemd-tmpfiles work without systemd running
# (chroots, image builds) and honour $DPKG_ROOT (dpkg --root with chrootless
# scripts). Without them (no systemd at all), the same with the shadow tools.
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

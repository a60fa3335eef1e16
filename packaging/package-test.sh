#!/usr/bin/env bash
# Checks the packages built by `make package` (make package-test): lintian
# on the .deb and rpmlint on the .rpm, no build-machine paths in either
# payload; then installs the .deb into a scratch root. dpkg --root with
# --force-script-chrootless runs the
# maintainer scripts on this host with DPKG_ROOT set, as Debian does for
# bootstrapping; they apply sysusers.d and tmpfiles.d to the scratch root and
# leave the host alone. No systemd, chroot or network needed.
#
# Checked after install: the files and their modes, the conffile, the coffer user and
# groups, the directories, `coffer --version` from the installed path, that
# the daemon accepts the installed config, an upgrade that keeps a local
# config edit, removal (config kept) and purge.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package-test: $*" >&2; exit 1; }
command -v dpkg >/dev/null || fail "dpkg is missing"
arch=$(dpkg --print-architecture)
pkgver=${PKG_VERSION:?set PKG_VERSION (make package-test does)}-${PKG_RELEASE:?set PKG_RELEASE (make package-test does)}
deb=dist/coffer_${pkgver}_${arch}.deb
rpm=$(ls dist/coffer-"$pkgver".*.rpm 2>/dev/null | head -1)
[ -f "$deb" ] || fail "$deb is missing: run make package"
[ -f "$rpm" ] || fail "dist/coffer-$pkgver.<arch>.rpm is missing: run make package"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# lintian: any error or warning fails (info and pedantic tags are shown).
# Overrides are in packaging/lintian-overrides, each with its reason.
command -v lintian >/dev/null || fail "lintian is missing (make package-test installs it)"
lintian --fail-on error,warning --display-level '>=pedantic' --pedantic --display-info --tag-display-limit 0 "$deb" >"$work/lintian.txt" 2>&1 ||
	{ cat "$work/lintian.txt"; fail "lintian: errors or warnings in $deb"; }
grep -v 'running with root privileges' "$work/lintian.txt" | sed 's/^/lintian: /' || true
echo "lintian: $(grep -c '^E:' "$work/lintian.txt") errors, $(grep -c '^W:' "$work/lintian.txt") warnings"

# rpmlint (Debian's package): any error fails; packaging/rpmlint.toml says
# why each of its filters is there. rpmlint unpacks with `rpm2cpio | cpio
# -id` in the current directory, and nfpm's payload names are absolute
# (/usr/bin/coffer, not ./usr/bin/coffer): plain cpio would write them into
# this machine's /. A cpio that keeps them relative comes first on PATH, and
# rpmlint runs in a directory of its own.
command -v rpmlint >/dev/null || fail "rpmlint is missing (make package-test installs it)"
mkdir -p "$work/rpmlint/bin" "$work/rpmlint/cwd"
printf '#!/bin/sh\nexec %s --no-absolute-filenames "$@"\n' "$(command -v cpio)" >"$work/rpmlint/bin/cpio"
chmod +x "$work/rpmlint/bin/cpio"
rpmfile=$(realpath "$rpm")
(cd "$work/rpmlint/cwd" && PATH="$work/rpmlint/bin:$PATH" rpmlint -c "$OLDPWD/packaging/rpmlint.toml" "$rpmfile") >"$work/rpmlint.txt" 2>&1 &&
	rc=0 || rc=$?
sed -n 's/^coffer[^:]*: /rpmlint: /p' "$work/rpmlint.txt"
summary=$(grep -E '[0-9]+ errors, [0-9]+ warnings' "$work/rpmlint.txt") || { cat "$work/rpmlint.txt"; fail "rpmlint did not run"; }
echo "rpmlint: ${summary#*checked; }"
grep -q ' 0 errors,' <<<"$summary" && [ "$rc" = 0 ] || { cat "$work/rpmlint.txt"; fail "rpmlint: errors in $rpm (exit $rc)"; }

# Neither payload names a path of the build machine: the work tree, the
# module cache, GOROOT or the home directory (-trimpath).
mkdir -p "$work/payload/deb" "$work/payload/rpm"
dpkg-deb -x "$deb" "$work/payload/deb"
# rpm2cpio 4.18 exits 1 on nfpm's payload after writing all of it; the
# binary compared below shows the unpacking worked.
(cd "$work/payload/rpm" && { rpm2cpio "$rpmfile" || :; } | cpio -id --no-absolute-filenames --quiet 2>/dev/null)
for kind in deb rpm; do
	cmp -s bin/coffer "$work/payload/$kind/usr/bin/coffer" || fail "the $kind's /usr/bin/coffer is not bin/coffer"
done
for p in "$PWD" "$(go env GOMODCACHE 2>/dev/null || echo /nonexistent)" "$(go env GOROOT 2>/dev/null || echo /nonexistent)" "$HOME"; do
	for kind in deb rpm; do
		if grep -rlaF -- "$p/" "$work/payload/$kind" >"$work/paths.txt" ||
			find "$work/payload/$kind" -name '*.gz' -exec sh -c 'zcat "$1" | grep -qaF -- "$2/"' _ {} "$p" \; -print | grep -q .; then
			fail "the $kind payload names the build path $p/: $(cat "$work/paths.txt")"
		fi
	done
done
# The maintainer scripts parse with the system's sh (dash here), the rpm's
# too (lintian checks the deb's for bashisms); the rpm's have the shared
# part put in (make package).
for f in dist/gen/scripts/*/*.sh; do
	sh -n "$f" || fail "$f: sh -n failed"
done
rpm -qp --scripts "$rpm" 2>/dev/null | grep -q 'systemd-sysusers --root=' || fail "the rpm's %post lacks accounts.sh"
rpm -qp --changelog "$rpm" 2>/dev/null | grep -q -- "- $pkgver\$" || fail "the rpm's %changelog has no entry for $pkgver"
# The scratch root of the install.
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"

# libc6 and softhsm2 are not in the scratch root's dpkg database; the host's
# libc runs the binary.
dpkg_root() {
	dpkg --root="$root" --force-script-chrootless --force-depends \
		--log="$root/var/log/dpkg.log" "$@"
}

echo "installing $deb into $root"
dpkg_root -i "$deb" >"$root/install.log" 2>&1 || { cat "$root/install.log"; fail "dpkg -i failed"; }
grep -q "coffer is installed but not enabled" "$root/install.log" || fail "postinst did not run: $(cat "$root/install.log")"

status=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status} ${Version}' coffer)
[ "$status" = "install ok installed $pkgver" ] || fail "dpkg status: $status"

# Files: path, mode, owner.
while read -r mode path; do
	[ -e "$root$path" ] || fail "$path is missing"
	got=$(stat -c '%a %U:%G' "$root$path")
	[ "$got" = "$mode root:root" ] || fail "$path: $got, want $mode root:root"
done <<'FILES'
755 /usr/bin/coffer
755 /usr/bin/coffer-client
644 /usr/lib/systemd/system/coffer.service
644 /usr/lib/systemd/system/coffer.socket
644 /usr/lib/systemd/system/coffer-creds.socket
644 /usr/lib/systemd/system/coffer-vsock.socket
644 /usr/lib/sysusers.d/coffer.conf
644 /usr/lib/tmpfiles.d/coffer.conf
644 /etc/coffer/coffer.toml
644 /usr/share/man/man8/coffer.8.gz
644 /usr/share/bash-completion/completions/coffer
644 /usr/share/zsh/vendor-completions/_coffer
644 /usr/share/fish/vendor_completions.d/coffer.fish
644 /usr/share/doc/coffer/README.md
644 /usr/share/doc/coffer/copyright
644 /usr/share/doc/coffer/changelog.Debian.gz
644 /usr/share/lintian/overrides/coffer
644 /usr/share/polkit-1/rules.d/50-coffer.rules
FILES
for u in coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket; do
	cmp -s "systemd/$u" "$root/usr/lib/systemd/system/$u" || fail "$u differs from systemd/$u"
done
cmp -s packaging/coffer.toml "$root/etc/coffer/coffer.toml" || fail "/etc/coffer/coffer.toml differs from packaging/coffer.toml"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}' coffer | grep -q '^ /etc/coffer/coffer.toml ' ||
	fail "/etc/coffer/coffer.toml is not a conffile"
# The man pages: coffer(8) and one per command, all of them installed.
zcat "$root/usr/share/man/man8/coffer.8.gz" | grep -q '^\.TH COFFER 8 ' || fail "coffer.8.gz is not the section 8 roff page"
zcat "$root/usr/share/man/man1/coffer-secret-create.1.gz" | grep -q '^\.TH COFFER-SECRET-CREATE 1 ' || fail "no coffer-secret-create(1)"
n=0
for page in dist/gen/man/man*/*.gz; do
	rel=${page#dist/gen/man/}
	[ -f "$root/usr/share/man/$rel" ] || fail "/usr/share/man/$rel is missing"
	n=$((n + 1))
done
[ "$n" -ge 80 ] || fail "$n man pages, want one per command (80 or more)"
grep -q 'complete' "$root/usr/share/bash-completion/completions/coffer" || fail "bash completion looks empty"

# The binary from its installed path.
got=$("$root/usr/bin/coffer" --version)
[ "$got" = "coffer version ${VERSION:?}" ] || fail "coffer --version: $got, want coffer version $VERSION"

# The postinst: user and groups (sysusers.d), directories (tmpfiles.d).
grep -q '^coffer:x:[0-9]*:[0-9]*:coffer credential daemon:/var/lib/coffer:/usr/sbin/nologin$' "$root/etc/passwd" ||
	fail "no coffer user in the root's /etc/passwd: $(cat "$root/etc/passwd" 2>/dev/null)"
for g in coffer coffer-admins coffer-clients softhsm; do
	grep -q "^$g:" "$root/etc/group" || fail "no group $g"
done
grep -Eq '^softhsm:x:[0-9]+:(.*,)?coffer(,|$)' "$root/etc/group" || fail "coffer is not in softhsm"
grep -Eq '^coffer-clients:x:[0-9]+:(.*,)?coffer(,|$)' "$root/etc/group" || fail "coffer is not in coffer-clients"
uid=$(awk -F: '$1 == "coffer" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "coffer" { print $3 }' "$root/etc/group")
[ "$(stat -c '%a %u:%g' "$root/var/lib/coffer")" = "700 $uid:$gid" ] || fail "/var/lib/coffer: $(stat -c '%a %u:%g' "$root/var/lib/coffer")"
[ "$(stat -c '%a %U' "$root/etc/coffer")" = "755 root" ] || fail "/etc/coffer: $(stat -c '%a %U' "$root/etc/coffer")"
grep -qx "$uid" <<<"$(id -u coffer 2>/dev/null || echo none)" && fail "the host got a coffer user" || true

# The daemon accepts the installed config: every key is known. It stops
# later, at the HSM module, which does not exist.
(umask 077 && echo 1234 >"$root/pin") # a PIN file others may read is refused
out=$("$root/usr/bin/coffer" daemon --config "$root/etc/coffer/coffer.toml" \
	--state-dir "$root/state" --hsm-module "$root/no-such-module.so" --hsm-pin-file "$root/pin" \
	--admin-group root --socket-group root --socket "$root/c.sock" --creds-socket "$root/creds.sock" 2>&1) &&
	fail "the daemon started without an HSM module: $out"
grep -q "config $root/etc/coffer/coffer.toml" <<<"$out" && fail "the daemon rejects the installed config: $out"
grep -q "no-such-module.so" <<<"$out" || fail "expected an HSM module error, got: $out"

# Upgrade (same version again): prerm upgrade, postinst configure <old>.
# A local edit of the conffile survives.
echo '# local edit' >>"$root/etc/coffer/coffer.toml"
dpkg_root -i "$deb" >"$root/upgrade.log" 2>&1 || { cat "$root/upgrade.log"; fail "reinstall failed"; }
grep -q "not enabled" "$root/upgrade.log" && fail "postinst treated the upgrade as a fresh install"
tail -n1 "$root/etc/coffer/coffer.toml" | grep -qx '# local edit' || fail "the upgrade lost the local config edit"

# The administrator enables the units (systemctl works offline on a --root);
# the postinst recorded their links (deb-systemd-helper update-state).
systemctl --root="$root" enable coffer.socket coffer-creds.socket coffer.service >/dev/null 2>&1 ||
	fail "systemctl --root enable failed"
links="etc/systemd/system/sockets.target.wants/coffer.socket etc/systemd/system/sockets.target.wants/coffer-creds.socket etc/systemd/system/multi-user.target.wants/coffer.service"
for l in $links; do [ -L "$root/$l" ] || fail "no link $l after systemctl enable"; done
[ -f "$root/var/lib/systemd/deb-systemd-helper-enabled/coffer.service.dsh-also" ] ||
	fail "the postinst did not record the units' links (deb-systemd-helper update-state)"

# Remove: files go, the units are disabled (their links go), the config
# stays; purge: the config and the links' record go, the state stays.
dpkg_root -r coffer >"$root/remove.log" 2>&1 || { cat "$root/remove.log"; fail "dpkg -r failed"; }
for l in $links; do [ ! -L "$root/$l" ] || fail "$l left after remove: the prerm did not disable the units"; done
[ ! -e "$root/usr/bin/coffer" ] || fail "/usr/bin/coffer left after remove"
[ ! -e "$root/usr/lib/systemd/system/coffer.service" ] || fail "coffer.service left after remove"
[ -f "$root/etc/coffer/coffer.toml" ] || fail "remove deleted the config"
dpkg_root -P coffer >"$root/purge.log" 2>&1 || { cat "$root/purge.log"; fail "dpkg -P failed"; }
[ ! -e "$root/etc/coffer/coffer.toml" ] || fail "purge left /etc/coffer/coffer.toml"
[ -d "$root/var/lib/coffer" ] || fail "purge deleted the state directory"
[ -z "$(ls -A "$root/var/lib/systemd/deb-systemd-helper-enabled" 2>/dev/null)" ] ||
	fail "purge left deb-systemd-helper's record: $(ls -R "$root/var/lib/systemd/deb-systemd-helper-enabled")"

echo "package-test: $deb installs, upgrades, removes and purges cleanly"

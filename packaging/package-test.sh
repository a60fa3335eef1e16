#!/usr/bin/env bash
# Installs the .deb built by `make package` into a scratch root and checks it
# (make package-test). dpkg --root with --force-script-chrootless runs the
# maintainer scripts on this host with DPKG_ROOT set, as Debian does for
# bootstrapping; they apply sysusers.d and tmpfiles.d to the scratch root and
# leave the host alone. No systemd, chroot or network needed.
#
# Checked: the files and their modes, the conffile, the coffer user and
# groups, the directories, `coffer --version` from the installed path, that
# the daemon accepts the installed config, an upgrade that keeps a local
# config edit, removal (config kept) and purge.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package-test: $*" >&2; exit 1; }
command -v dpkg >/dev/null || fail "dpkg is missing"
arch=$(dpkg --print-architecture)
pkgver=${PKG_VERSION:?set PKG_VERSION (make package-test does)}
deb=dist/coffer_${pkgver}_${arch}.deb
[ -f "$deb" ] || fail "$deb is missing: run make package"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
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
644 /usr/share/polkit-1/rules.d/50-coffer.rules
FILES
for u in coffer.service coffer.socket coffer-creds.socket coffer-vsock.socket; do
	cmp -s "systemd/$u" "$root/usr/lib/systemd/system/$u" || fail "$u differs from systemd/$u"
done
cmp -s packaging/coffer.toml "$root/etc/coffer/coffer.toml" || fail "/etc/coffer/coffer.toml differs from packaging/coffer.toml"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}' coffer | grep -q '^ /etc/coffer/coffer.toml ' ||
	fail "/etc/coffer/coffer.toml is not a conffile"
# The generator (urfave/cli ToMan) writes a section 8 page.
zcat "$root/usr/share/man/man8/coffer.8.gz" | grep -q '^\.TH coffer 8' || fail "the man page is not a section 8 roff page"
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

# Remove: files go, the config stays; purge: the config goes, state stays.
dpkg_root -r coffer >"$root/remove.log" 2>&1 || { cat "$root/remove.log"; fail "dpkg -r failed"; }
[ ! -e "$root/usr/bin/coffer" ] || fail "/usr/bin/coffer left after remove"
[ ! -e "$root/usr/lib/systemd/system/coffer.service" ] || fail "coffer.service left after remove"
[ -f "$root/etc/coffer/coffer.toml" ] || fail "remove deleted the config"
dpkg_root -P coffer >"$root/purge.log" 2>&1 || { cat "$root/purge.log"; fail "dpkg -P failed"; }
[ ! -e "$root/etc/coffer/coffer.toml" ] || fail "purge left /etc/coffer/coffer.toml"
[ -d "$root/var/lib/coffer" ] || fail "purge deleted the state directory"

echo "package-test: $deb installs, upgrades, removes and purges cleanly"

#!/usr/bin/env bash
# Makes the Kubernetes control plane of the end-to-end tests available and
# prints the directory that holds it: kube-apiserver and kubectl at
# K8S_VERSION, built from the Go module proxy by the module in
# test/kube-build, and etcd/etcdctl from Debian's etcd-server and etcd-client.
#
#   COFFER_K8S_BIN=$(scripts/k8s-tools.sh)
#
# The binaries live in ${COFFER_K8S_CACHE:-/var/cache/coffer-k8s}/<version>/bin,
# never in the repository. A stamp beside them records what they were built
# from (the build module's files, the version flags, the Go version); when
# it matches, the script only checks and prints, in well under a second. A
# cold build of both programs takes about 20 CPU-minutes: some 10 minutes
# on 2 idle cores, 43 measured with the cores shared (docs/k8s-test.md).
#
# Only the path goes to standard output; progress goes to standard error.
set -euo pipefail

K8S_VERSION=v1.37.2
root=$(cd "$(dirname "$0")/.." && pwd)
mod="$root/test/kube-build"
cache="${COFFER_K8S_CACHE:-/var/cache/coffer-k8s}/$K8S_VERSION"
bin="$cache/bin"

log() { printf 'k8s-tools: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
	export PATH=$PATH:/usr/local/go/bin
fi

grep -q "^require k8s.io/kubernetes $K8S_VERSION\$\|^	k8s.io/kubernetes $K8S_VERSION\$" "$mod/go.mod" ||
	die "$mod/go.mod does not require k8s.io/kubernetes $K8S_VERSION"

mkdir -p "$bin" 2>/dev/null || die "cannot create $bin: run as root, or set COFFER_K8S_CACHE to a directory of yours"
# One build at a time for this cache (two checkouts, or make -j).
exec 9>"$cache/.lock"
flock 9

# etcd: Debian's package; its postinst must not leave an etcd of the
# system on 2379, so service starts are refused while it installs (an
# existing policy-rc.d is left as it is).
install_etcd() {
	export DEBIAN_FRONTEND=noninteractive
	local policy=/usr/sbin/policy-rc.d placed=""
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		placed=1
	fi
	log "installing etcd-server and etcd-client (Debian)"
	local rc=0
	{ apt-get install -y --no-install-recommends etcd-server etcd-client >&2 ||
		{ apt-get update >&2 && apt-get install -y --no-install-recommends etcd-server etcd-client >&2; }; } || rc=$?
	[ -z "$placed" ] || rm -f "$policy"
	[ "$rc" -eq 0 ] || die "apt-get install etcd-server etcd-client failed"
	# The package enables its unit (and its SysV script) for the next
	# boot: the tests start their own etcd on free ports and want none of
	# the system's. systemctl disable works without a running systemd.
	if command -v systemctl >/dev/null; then
		systemctl disable etcd.service >&2 || true
		if [ -d /run/systemd/system ]; then
			systemctl stop etcd.service >&2 || true
		fi
	fi
}
if ! [ -x /usr/bin/etcd ] || ! [ -x /usr/bin/etcdctl ]; then
	[ "$(id -u)" -eq 0 ] || die "etcd is not installed: as root, apt-get install etcd-server etcd-client"
	install_etcd
fi
ln -sfn /usr/bin/etcd "$bin/etcd"
ln -sfn /usr/bin/etcdctl "$bin/etcdctl"

# kube-apiserver and kubectl.
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0
export GOTOOLCHAIN="${COFFER_K8S_GOTOOLCHAIN:-local}"
# The version the binaries report: the release's, as its own build would
# set it (hack/lib/version.sh), with the release's date as the build date.
# The commit is not known from the module proxy and is left out.
major=${K8S_VERSION#v}
minor=${major#*.}
minor=${minor%%.*}
major=${major%%.*}
release_time=$(cd "$mod" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X '$pkg.gitVersion=$K8S_VERSION' -X '$pkg.gitMajor=$major'"
	ldflags+=" -X '$pkg.gitMinor=$minor' -X '$pkg.gitTreeState=clean'"
	ldflags+=" -X '$pkg.buildDate=${release_time:-1970-01-01T00:00:00Z}'"
done

stamp=$(
	cd "$mod"
	{
		cat go.mod go.sum
		find cmd -type f -name '*.go' | LC_ALL=C sort | xargs cat
		echo "$ldflags"
		go env GOVERSION GOARCH
	} | sha256sum | cut -d' ' -f1
)
if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] &&
	[ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; then
	log "cached: $bin"
	echo "$bin"
	exit 0
fi

tmp=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
log "building kube-apiserver and kubectl $K8S_VERSION ($(go env GOVERSION)) into $bin; a cold build takes 10 minutes or more"
(cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" ./cmd/kube-apiserver ./cmd/kubectl) ||
	die "go build of kube-apiserver and kubectl in $mod failed"
got=$("$tmp/kube-apiserver" --version)
[ "$got" = "Kubernetes $K8S_VERSION" ] || die "built kube-apiserver says '$got', not 'Kubernetes $K8S_VERSION'"
mv -f "$tmp/kube-apiserver" "$tmp/kubectl" "$bin/"
echo "$stamp" >"$cache/stamp"
log "built in $((SECONDS - start))s: $bin"
echo "$bin"

# coffer — make help lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/coffer
CLIENT_BIN := bin/coffer-client
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# -z now: all symbols bound at start, so the GOT is read-only (full RELRO).
LDFLAGS := -s -w -X main.version=$(VERSION) -extldflags=-Wl,-z,now
# Build tags of a shipped binary; internal/buildtags.Release says the same
# for the bench and the e2e tests.
TAGS := urfave_cli_no_docs
SOFTHSM_MODULE ?= /usr/lib/softhsm/libsofthsm2.so
# Quiet unless V=1.
Q := $(if $(V),,@)

.DEFAULT_GOAL := help


.PHONY: help build client run deps test-deps install-pkgs test race soak storage-soak lint vulncheck bench microbench fuzz clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

# A position-independent executable (PIE), as Debian's hardening asks of
# every binary (lintian: hardening-no-pie); -trimpath keeps the build
# machine's paths out of it.
build: ## build bin/coffer
	$(Q)$(GO) build -trimpath -buildmode=pie -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/coffer

client: ## build bin/coffer-client: the CLI without the daemon (tag nodaemon), static (CGO_ENABLED=0), for VM guests and containers
	$(Q)CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS),nodaemon' -ldflags '$(LDFLAGS)' -o $(CLIENT_BIN) ./cmd/coffer

run: deps build ## build and start the daemon on its embedded default (./.coffer/)
	$(Q)./$(BIN) daemon --dev

deps: ## install what coffer needs to run (SoftHSM2)
	$(Q)$(MAKE) -s install-pkgs PKGS="softhsm2:$(SOFTHSM_MODULE)"

# The software TPM 2.0 and its PKCS#11 module, for the tests over a TPM.
TPM_PKGS := swtpm:/usr/bin/swtpm tpm2-tools:/usr/bin/tpm2_getcap tpm2-abrmd:/usr/sbin/tpm2-abrmd \
	libtss2-tcti-tabrmd0:/usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0 dbus:/usr/bin/dbus-daemon \
	libtpm2-pkcs11-1:/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so libtpm2-pkcs11-tools:/usr/bin/tpm2_ptool

# Prometheus and promtool, for the metrics tests (a real scrape).
PROM_PKGS := prometheus:/usr/bin/prometheus prometheus:/usr/bin/promtool

# The shells whose completion scripts the tests run, and groff for the man
# pages' rendering.
SHELL_PKGS := bash:/bin/bash zsh:/usr/bin/zsh fish:/usr/bin/fish groff-base:/usr/bin/groff

test-deps: ## install what the tests need too (user-mode-linux for the AF_VSOCK test; a software TPM; Prometheus; zsh and fish)
	$(Q)$(MAKE) -s install-pkgs PKGS="softhsm2:$(SOFTHSM_MODULE) user-mode-linux:/usr/bin/linux.uml $(TPM_PKGS) $(PROM_PKGS) $(SHELL_PKGS)"

# install-pkgs installs each PACKAGE:FILE of PKGS whose FILE is missing
# (apt-get, as root); otherwise it says what to run.
install-pkgs:
	$(Q)missing=""; for p in $(PKGS); do [ -e "$${p#*:}" ] || missing="$$missing $${p%%:*}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing:$$missing: run 'sudo apt-get install -y$$missing'" >&2; exit 1; \
		fi; \
	fi

test: test-deps ## run every test (unit and end-to-end) with the race detector; the CLI's also as coffer-client (tag nodaemon)
	$(Q)$(GO) test -race -count=1 -timeout 15m ./...
	$(Q)$(GO) test -race -count=1 -tags '$(TAGS),nodaemon' ./cmd/coffer

race: test-deps ## run every test three times with the race detector, to shake out flakes
	$(Q)$(GO) test -race -count=3 -timeout 30m ./...

soak: test-deps ## kill -9 the daemon under 8 concurrent writers SOAK_CYCLES times (default 200); nothing acknowledged may be lost
	$(Q)COFFER_SOAK_CYCLES=$${SOAK_CYCLES:-200} $(GO) test -race -count=1 -timeout 90m -run '^TestCrashLosesNothing$$' -v ./e2e

storage-soak: test-deps ## as root: fill the state filesystem to ENOSPC and free it STORAGE_CYCLES times (default 20), kill -9 and restart while full; the read-only and damage tests; DURABLE_ROUNDS (default 200) journal aborts under fsyncing writers
	$(Q)COFFER_STORAGE_SOAK_CYCLES=$${STORAGE_CYCLES:-20} COFFER_DURABLE_ROUNDS=$${DURABLE_ROUNDS:-200} $(GO) test -race -count=1 -timeout 60m -run '^(TestStorage|TestFilesystem)' -v ./e2e ./kv ./internal/durable

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.9.0
VULNDB ?= https://vuln.go.dev

lint: ## gofmt, go vet, staticcheck and (where vuln.go.dev is reachable) govulncheck
	$(Q)out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(Q)$(GO) vet ./...
	$(Q)$(GO) vet -tags '$(TAGS)' ./cmd/coffer
	$(Q)CGO_ENABLED=0 $(GO) build -o /dev/null ./api/... ./client/...
	$(Q)CGO_ENABLED=0 $(GO) vet -tags '$(TAGS),nodaemon' ./cmd/coffer
	$(Q)$(GO) run $(STATICCHECK) ./...
	$(Q)$(GO) run $(STATICCHECK) -tags '$(TAGS),nodaemon' ./cmd/coffer
	$(Q)if curl -fsS -m 10 -o /dev/null $(VULNDB)/index/db.json 2>/dev/null; then \
		$(MAKE) -s vulncheck; \
	else \
		echo "lint: SKIPPED govulncheck: $(VULNDB) is not reachable from this machine (make vulncheck runs it and fails instead)"; \
	fi

vulncheck: ## govulncheck against $(VULNDB) (fails when the database is unreachable)
	$(Q)$(GO) run $(GOVULNCHECK) -db $(VULNDB) ./...

bench: deps ## measure the running daemon against ceilings taken in the same run, then the boot storm on SoftHSM and a software TPM (BENCH=full: larger data; BENCH_FLAGS=-short: smoke pass)
	$(Q)$(GO) run ./cmd/coffer-bench $(BENCH_FLAGS)
	$(Q)$(GO) run ./cmd/coffer-bench -boot-storm

microbench: deps ## Go micro-benchmarks of the hot functions (HSM, store, tokens, rules, JWT)
	$(Q)$(GO) test -run '^$$' -bench . -benchtime 1s ./hsm ./kv ./daemon ./audit ./policy ./k8s/kms ./k8s/signer

fuzz: ## fuzz the parsers (FUZZTIME per target, default 30s)
	$(Q)for pkg in $$(grep -rl '^func Fuzz' --include='*_test.go' . | xargs -n1 dirname | sort -u); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep ^Fuzz); do \
			echo "fuzz $$pkg $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
		done; \
	done

clean: ## remove build outputs (not ./.coffer/: that is your dev state)
	$(Q)rm -rf bin dist

# --- systemd units and packages (systemd/, packaging/) ---
.PHONY: package package-test systemd-check

# nfpm, run through the module proxy. v2.45.2 is the newest release whose
# dependencies all resolve here (from v2.46 on, nfpm needs modules under
# go.digitalxero.dev, which the proxy refuses).
NFPM := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
# The package version: a tag without its "v", else 0.0.0~git.<commit>
# (sorts before any release); "-" becomes "." (it splits deb revisions).
PKG_VERSION ?= $(shell echo '$(VERSION)' | sed -E 's/^v([0-9]+\.[0-9])/\1/; /^[0-9]+\.[0-9]/!s/^/0.0.0~git./; s/-/./g')
# The packaging revision: the .deb is <version>-<release> (a non-native
# Debian package, with changelog.Debian.gz) and the .rpm has Release: the same.
PKG_RELEASE ?= 1
# The changelog entry of this build, dated by its commit (reproducible).
PKG_DATE := $(shell git log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)
PKG_COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

package: build client ## build dist/coffer_<version>-<release>_<arch>.deb and .rpm with nfpm (coffer and coffer-client, units, config, man pages, completions, changelog)
	$(Q)set -o pipefail; rm -rf dist/gen && mkdir -p dist/gen/scripts/deb dist/gen/scripts/rpm && \
		./$(BIN) man --dir dist/gen/man && cp packaging/coffer-client.1 dist/gen/man/man1/ && gzip -9n dist/gen/man/*/* && \
		for sh in bash zsh fish; do ./$(BIN) completion $$sh >dist/gen/coffer.$$sh || exit 1; done
	$(Q)for f in packaging/scripts/deb/*.sh packaging/scripts/rpm/*.sh; do \
		sed -e '/^#include accounts.sh$$/{r packaging/scripts/accounts.sh' -e 'd;}' "$$f" >"dist/gen/$${f#packaging/}" || exit 1; \
	done
	$(Q)printf '%s\n' '- semver: $(PKG_VERSION)-$(PKG_RELEASE)' '  date: $(PKG_DATE)' \
		'  packager: coffer maintainers <coffer@coffer-hsm.invalid>' \
		'  deb: {urgency: medium, distributions: [unstable]}' \
		'  changes:' '    - commit: $(PKG_COMMIT)' \
		'      note: "Build of commit $(shell echo $(PKG_COMMIT) | cut -c1-12); see the repository history."' \
		>dist/gen/changelog.yml
	$(Q)for p in deb rpm; do \
		PKG_VERSION='$(PKG_VERSION)' PKG_RELEASE='$(PKG_RELEASE)' GOARCH=$$($(GO) env GOARCH) \
			$(GO) run $(NFPM) package -f packaging/nfpm.yaml -p $$p -t dist/ || exit 1; \
	done

# lintian and rpmlint from Debian's packages (rpm for rpm2cpio and rpm -qp).
PKG_TEST_PKGS := lintian:/usr/bin/lintian rpmlint:/usr/bin/rpmlint rpm:/usr/bin/rpm2cpio

package-test: package ## lintian and rpmlint (fail on any error or warning); install the .deb into a scratch root (dpkg --root) and check files, users, coffer --version, config, upgrade and removal
	$(Q)$(MAKE) -s install-pkgs PKGS="$(PKG_TEST_PKGS)"
	$(Q)VERSION='$(VERSION)' PKG_VERSION='$(PKG_VERSION)' PKG_RELEASE='$(PKG_RELEASE)' packaging/package-test.sh

systemd-check: ## check the unit files: systemd-analyze security exposure <= 0.5 and verify without warnings
	$(Q)systemd/check-units.sh

# --- under a real systemd (systemd/test/) ---
.PHONY: systemd-test

systemd-test: package ## as root: boot systemd 252 (bookworm, cached) in systemd-nspawn, install the .deb, check socket activation, READY/STATUS, LoadCredential=, reload, stop
	$(Q)PKG_VERSION='$(PKG_VERSION)' PKG_RELEASE='$(PKG_RELEASE)' timeout -k 30 900 systemd/test/systemd-test.sh

# --- beside a real Kubernetes control plane (scripts/k8s-tools.sh, internal/k8stest) ---
.PHONY: k8s-test

# scripts/k8s-tools.sh prints the directory of kube-apiserver and kubectl
# (built once from the Go module proxy, ~10 minutes cold, cached in
# ${COFFER_K8S_CACHE:-/var/cache/coffer-k8s}/<version>) and etcd/etcdctl
# (Debian). Setting COFFER_K8S_BIN is what makes the TestK8s tests run:
# without it they skip, and with it a missing program fails them.
k8s-test: test-deps ## as root: build kube-apiserver and kubectl v1.37.2 (cached), install etcd; run the TestK8s tests against a real control plane
	$(Q)bin=$$(scripts/k8s-tools.sh) && COFFER_K8S_BIN="$$bin" $(GO) test -count=1 -timeout 20m -run TestK8s -v ./e2e

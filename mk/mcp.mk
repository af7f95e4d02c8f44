# The official MCP Python SDK (PyPI `mcp`, pinned), into .venv, for the MCP end-to-end tests
# (tests/tests/e2e_mcp.rs runs tests/mcp/server.py as the upstream and tests/mcp/client.py through
# the gateway). After `envoy`, which may recreate .venv.

MCP_SDK_VERSION := 2.3.0

.PHONY: python-mcp

python-mcp: envoy
	@"$(VENV)/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("mcp") != "$(MCP_SDK_VERSION)")' 2>/dev/null || { \
	  echo "installing mcp==$(MCP_SDK_VERSION) into $(VENV)"; \
	  [ -x "$(VENV)/bin/python" ] || $(PYTHON) -m venv "$(VENV)"; \
	  "$(VENV)/bin/pip" install --quiet --disable-pip-version-check "mcp==$(MCP_SDK_VERSION)"; }

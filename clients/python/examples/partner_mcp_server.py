"""The demo's MCP server (official MCP Python SDK, Streamable HTTP): a partner with two tools.

    python partner_mcp_server.py PORT

Every pay_invoice call that reaches it is printed as a `PAID {...}` line, so the demo can count them.
"""

import json
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

server = MCPServer("partner")


@server.tool()
def list_open_invoices() -> str:
    """The open invoices."""
    return json.dumps([{"invoice": "inv_842", "amount": "423.50", "currency": "USD"}])


@server.tool()
def pay_invoice(invoice: str, amount: str, currency: str) -> str:
    """Pay an invoice."""
    print("PAID " + json.dumps({"invoice": invoice, "amount": amount, "currency": currency}), flush=True)
    return f"paid {invoice}: {amount} {currency}"


if __name__ == "__main__":
    port = int(sys.argv[1])
    # Requests arrive through the gateway with the destination's Host: no DNS-rebinding check.
    app = server.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")

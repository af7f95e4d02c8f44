"""The MCP server of the end-to-end tests (tests/tests/e2e_mcp.rs): the official MCP Python SDK's
MCPServer over its Streamable HTTP transport, stateless, answering with SSE streams.

    server.py PORT CALL_LOG

Every tool call appends one JSON line {"tool", "arguments"} to CALL_LOG, so the test can count
what reached the upstream. `stream` reports progress (an SSE event on the call's own response
stream), then waits until the client says it saw that event (it creates the gate file named in
the arguments), then finishes: if anything between them held the response back until the end,
the gate would never open and the tool would answer "timed out" instead of "released".
"""

import json
import os
import sys
import time

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

port = int(sys.argv[1])
call_log = sys.argv[2]

server = MCPServer("missiongate-e2e", version="1")


def record(tool: str, arguments: dict) -> None:
    with open(call_log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    record("echo", {"text": text})
    return text


@server.tool()
def pay_invoice(invoice: str, amount: str, currency: str) -> str:
    """Pay an invoice (a consequential tool)."""
    record("pay_invoice", {"invoice": invoice, "amount": amount, "currency": currency})
    return f"paid {invoice}: {amount} {currency}"


@server.tool()
async def stream(gate: str, ctx: Context) -> str:
    """Report progress, then wait for the client to have seen it."""
    record("stream", {"gate": gate})
    await ctx.report_progress(1, 2, "first event")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(gate):
            await ctx.report_progress(2, 2, "done")
            return "released"
        await anyio.sleep(0.05)
    return "timed out"


if __name__ == "__main__":
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=port,
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=False,
        # The gateway forwards the agent's Host (mcp.partner.example): the SDK's DNS-rebinding check
        # is for servers reached directly by browsers, not behind a forward proxy.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

"""The client as the HTTP transport of the official MCP Python SDK's Streamable HTTP client, through
the real gateway (the destination marked as an MCP server, SPEC section 7) to an MCP server of the
same SDK: a tool outside the Mission gets the -32042 error with the access request, the client
requests access, a person approves, and exactly that call goes through once."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

import httpx2  # the MCP SDK's HTTP client (make python-clients installs the SDK)
import uvicorn  # a dependency of the MCP SDK
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.transport_security import TransportSecuritySettings  # noqa: E402

from missiongate_client import Denied, TaskUpdate  # noqa: E402
from missiongate_client.httpx2 import AsyncAccessRequestTransport  # noqa: E402

from conftest import DESTINATION, Stack  # noqa: E402

MCP_CONFIG = {"path": "/mcp", "tools": [{"name": "list_open_invoices", "consequential": False}]}
PAID: list[dict] = []


def partner_server() -> MCPServer:
    server = MCPServer("partner")

    @server.tool()
    def list_open_invoices() -> str:
        """The open invoices."""
        return json.dumps(["inv_842", "inv_843"])

    @server.tool()
    def pay_invoice(invoice: str, amount: str, currency: str) -> str:
        """Pay an invoice."""
        PAID.append({"invoice": invoice, "amount": amount, "currency": currency})
        return f"paid {invoice}: {amount} {currency}"

    return server


@pytest.fixture(scope="module")
def mcp_upstream():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The gateway forwards with the destination's Host (api.partner.example): no DNS-rebinding check.
    app = partner_server().streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the MCP server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def mcp_stack(mcp_upstream):
    s = Stack(stack_args=("--upstream-port", str(mcp_upstream), "--mcp", json.dumps(MCP_CONFIG)))
    yield s
    s.close()


def test_a_blocked_tool_is_requested_approved_and_called_once(mcp_stack):
    stack = mcp_stack
    mid, token = stack.mission(["mcp.method.*", "mcp.tool.list_open_invoices"], resource="https://api.partner.example/mcp")
    updates: list[TaskUpdate] = []

    def person(u: TaskUpdate) -> None:
        updates.append(u)
        if len(updates) == 1:
            stack.approve(u.task_id, 60)

    args = {"invoice": "inv_842", "amount": "423.50", "currency": "USD"}

    async def agent():
        transport = AsyncAccessRequestTransport(
            httpx2.AsyncHTTPTransport(proxy=stack.proxy),
            justification="pay the reconciled invoice",
            on_status=person,
            max_wait=60,
        )
        http = httpx2.AsyncClient(transport=transport, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with http, Client(streamable_http_client(f"{DESTINATION}/mcp", http_client=http)) as client:
            tools = await client.list_tools()
            listed = await client.call_tool("list_open_invoices", {})
            paid = await client.call_tool("pay_invoice", args)
            return tools, listed, paid

    before = len(PAID)
    tools, listed, paid = asyncio.run(agent())
    assert {t.name for t in tools.tools} == {"list_open_invoices", "pay_invoice"}
    assert not listed.is_error and "inv_842" in listed.content[0].text
    assert not paid.is_error, paid
    assert paid.content[0].text == "paid inv_842: 423.50 USD"
    assert PAID[before:] == [args], "the approved call reached the server exactly once"
    assert [u.status for u in updates][0] == "pending" and updates[-1].status == "approved"
    reqs = stack.requests_of(mid)
    assert len(reqs) == 1, reqs
    assert reqs[0]["parameters"] == {
        "target": "https://api.partner.example/mcp",
        "mcp_method": "tools/call",
        "tool": "pay_invoice",
        "arguments": args,
    }
    assert reqs[0]["denial"]["action"]["name"] == "mcp.tool.pay_invoice"


def test_a_denied_tool_call_raises_denied_through_the_sdk(mcp_stack):
    stack = mcp_stack
    mid, token = stack.mission(["mcp.method.*"], resource="https://api.partner.example/mcp")

    def person(u: TaskUpdate) -> None:
        if u.status == "pending":
            stack.deny(u.task_id, "not this invoice")

    async def agent():
        transport = AsyncAccessRequestTransport(httpx2.AsyncHTTPTransport(proxy=stack.proxy), on_status=person, max_wait=60)
        http = httpx2.AsyncClient(transport=transport, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with http, Client(streamable_http_client(f"{DESTINATION}/mcp", http_client=http)) as client:
            return await asyncio.wait_for(client.call_tool("pay_invoice", {"invoice": "inv_9", "amount": "1.00", "currency": "USD"}), 60)

    before = len(PAID)
    # The SDK runs its HTTP calls in a task group: the typed error arrives in an ExceptionGroup
    # (`except* Denied` in an agent), and the call never reached the server.
    with pytest.raises(BaseExceptionGroup) as e:
        asyncio.run(agent())
    denied = e.value.subgroup(Denied)
    assert denied is not None, e.value
    err = denied.exceptions[0]
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    assert err.reason == "not this invoice" and err.status == "denied"
    assert len(PAID) == before
    assert [r["task"]["status"] for r in stack.requests_of(mid)] == ["denied"]

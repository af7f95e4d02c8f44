"""The demo's MCP agent: the official MCP Python SDK client, with missiongate_client as its HTTP
transport, so a tool call the gateway refuses with -32042 becomes an access request (no
hand-written retries here).

    MISSIONGATE_TOKEN=... python mcp_agent.py PROXY MCP_URL
"""

import asyncio
import logging
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from missiongate_client import AccessRequestError, TaskUpdate
from missiongate_client.httpx2 import AsyncAccessRequestTransport


def say(text: str) -> None:
    print(f"   agent: {text}", flush=True)


def on_status(u: TaskUpdate) -> None:
    wait = f", next poll in {u.retry_after:.0f} s" if u.retry_after else ""
    say(f"access request {u.task_id} is {u.status}{wait}")


async def main(proxy: str, url: str, token: str) -> int:
    transport = AsyncAccessRequestTransport(
        httpx2.AsyncHTTPTransport(proxy=proxy),
        justification="Pay invoice inv_842, reconciled against the Q3 report",
        on_status=on_status,
        max_wait=120,
    )
    http = httpx2.AsyncClient(transport=transport, headers={"Authorization": f"Bearer {token}"}, timeout=150)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        tools = await client.list_tools()
        say("tools/list: " + ", ".join(t.name for t in tools.tools))
        listed = await client.call_tool("list_open_invoices", {})
        say(f"list_open_invoices (inside the Mission): {listed.content[0].text}")
        say("pay_invoice(inv_842, 423.50 USD) is outside the Mission ...")
        paid = await client.call_tool("pay_invoice", {"invoice": "inv_842", "amount": "423.50", "currency": "USD"})
        if paid.is_error:
            say(f"pay_invoice failed: {paid.content}")
            return 1
        say(f"pay_invoice: {paid.content[0].text}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="   agent log: %(message)s", stream=sys.stdout)
    try:
        sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], os.environ["MISSIONGATE_TOKEN"])))
    except AccessRequestError as e:
        say(f"no approval: {e}")
        sys.exit(2)

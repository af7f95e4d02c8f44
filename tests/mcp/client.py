"""The MCP client of the end-to-end tests (tests/tests/e2e_mcp.rs): the official MCP Python SDK's
Client over its Streamable HTTP transport, through the gateway as an HTTP forward proxy.

    client.py PLAN_JSON

PLAN: {"proxy", "url", "token", "mode" ("legacy" or a protocol version), "wrong_mcp_name"?, "steps": [...]}, each step
{"op": "list_tools"} or {"op": "call", "tool", "arguments", "gate"?}. Prints one JSON document:
{"protocol": ..., "results": [{"ok": ...} | {"error": {"code", "message", "data"}} | {"transport": ...}]}.
A "gate" step creates the file named by its arguments' "gate" when the first progress event arrives.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def main(plan: dict) -> dict:
    seen = []

    async def on_request(request):
        # What went out (the SDK's own routing headers included), and, when the plan says so, an
        # Mcp-Name that differs from the body's tool name (as a broken or hostile client would send).
        if request.headers.get("mcp-name") and plan.get("wrong_mcp_name"):
            request.headers["mcp-name"] = plan["wrong_mcp_name"]
        seen.append({k: request.headers[k] for k in ("mcp-method", "mcp-name") if k in request.headers})

    http = httpx2.AsyncClient(
        proxy=plan["proxy"],
        headers={"Authorization": f"Bearer {plan['token']}"},
        timeout=httpx2.Timeout(60.0),
        event_hooks={"request": [on_request]},
    )
    results = []
    async with http:
        transport = streamable_http_client(plan["url"], http_client=http)
        try:
            await run(Client(transport, mode=plan.get("mode", "legacy"), cache=None), plan, results)
        except* MCPError as group:
            # Refused while connecting (the handshake itself); the SDK's task groups wrap it.
            e = first(group)
            results.append({"error": {"code": e.code, "message": e.message, "data": e.data}})
    return {"results": results, "sent_headers": seen}


def first(group: BaseException) -> MCPError:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def run(connection: Client, plan: dict, results: list) -> None:
    async with connection as client:
        for step in plan["steps"]:
            try:
                if step["op"] == "list_tools":
                    r = await client.list_tools()
                    results.append({"ok": sorted(t.name for t in r.tools)})
                else:
                    progress = []

                    async def on_progress(p, total, message, step=step, progress=progress):
                        progress.append(message)
                        if step.get("gate") and len(progress) == 1:
                            open(step["arguments"]["gate"], "w").close()

                    r = await client.call_tool(step["tool"], step["arguments"], progress_callback=on_progress)
                    texts = [c.text for c in r.content if getattr(c, "type", "") == "text"]
                    results.append({"ok": texts, "is_error": bool(r.is_error), "progress": progress})
            except MCPError as e:
                results.append({"error": {"code": e.code, "message": e.message, "data": e.data}})


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))

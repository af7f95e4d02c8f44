"""The transports for `httpx2` (the HTTP client of the MCP Python SDK 2.x), same API as the httpx ones:

    import httpx2
    from missiongate_client.httpx2 import AsyncAccessRequestTransport
    client = httpx2.AsyncClient(transport=AsyncAccessRequestTransport(httpx2.AsyncHTTPTransport(proxy=...)))
"""

import httpx2 as _hx

from ._httpx import transports as _transports

AccessRequestTransport, AsyncAccessRequestTransport = _transports(_hx)

__all__ = ["AccessRequestTransport", "AsyncAccessRequestTransport"]

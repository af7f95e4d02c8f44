"""httpx transports (sync and async) that run the access request dance around the wrapped transport."""

from __future__ import annotations

import time
from typing import Any, Callable, Generator, Optional

import httpx

from ._core import (
    Denial,
    Engine,
    Justification,
    Options,
    Portal,
    PortalResponse,
    RequestInfo,
    Send,
    Sleep,
    TaskUpdate,
    denial_from_captive,
    denial_from_jsonrpc,
    looks_like_jsonrpc_request,
    media_type_essence,
    CAPTIVE_CONTENT_TYPE,
)


#: Per-call bound on the wait, as a request extension: `client.get(url, extensions={MAX_WAIT: 30})`.
MAX_WAIT = "missiongate.max_wait"


def drive(flow: Generator[Any, Any, Any], send: Callable[[], Any], portal: Callable[[Portal], Any]) -> Any:
    """Run the engine's flow with blocking I/O."""
    value: Any = None
    while True:
        try:
            effect = flow.send(value)
        except StopIteration as stop:
            return stop.value
        if isinstance(effect, Send):
            value = send()
        elif isinstance(effect, Portal):
            value = portal(effect)
        elif isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            value = None
        else:  # pragma: no cover - the engine yields nothing else
            raise TypeError(f"unknown effect {effect!r}")


def transports(hx: Any) -> tuple[type, type]:
    """The sync and async transports for an httpx-compatible module: `httpx`, or `httpx2` (which the
    MCP Python SDK 2.x uses; see `missiongate_client.httpx2`)."""

    def _info(request: Any) -> RequestInfo:
        return RequestInfo(
            method=request.method,
            url=str(request.url),
            path_and_query=request.url.raw_path.decode("ascii", "replace"),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.content,
        )


    def _max_wait(request: hx.Request) -> Optional[float]:
        v = request.extensions.get(MAX_WAIT)
        return float(v) if isinstance(v, (int, float)) else None


    def _worth_reading(request: hx.Request, response: hx.Response, mcp: bool) -> bool:
        ct = media_type_essence(response.headers.get("content-type"))
        if response.status_code == 511 and ct == CAPTIVE_CONTENT_TYPE:
            return True
        # A JSON-RPC call's JSON answer may be the MCP -32042 denial. An SSE stream is never read here.
        return (
            mcp
            and response.status_code == 200
            and ct == "application/json"
            and looks_like_jsonrpc_request(request.method, request.headers.get("content-type"), request.content)
        )


    def _rebuild(response: hx.Response, raw: bytes) -> tuple[hx.Response, bytes]:
        """A fresh response over the raw bytes already read, and the decoded body."""
        fresh = hx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=hx.ByteStream(raw),
            extensions=response.extensions,
        )
        if "content-encoding" in response.headers:
            probe = hx.Response(status_code=response.status_code, headers=response.headers, stream=hx.ByteStream(raw))
            decoded = probe.read()
        else:
            decoded = raw
        return fresh, decoded


    def _denial(response: hx.Response, body: bytes) -> Optional[Denial]:
        ct = response.headers.get("content-type")
        return denial_from_captive(response.status_code, ct, body) or denial_from_jsonrpc(response.status_code, ct, body)


    def _portal_response(r: hx.Response) -> PortalResponse:
        return PortalResponse(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


    def _options(
        justification: Justification,
        max_wait: float,
        on_status: Optional[Callable[[TaskUpdate], None]],
        bound_headers: tuple[str, ...],
        default_poll_interval: float,
    ) -> Options:
        return Options(
            justification=justification,
            max_wait=max_wait,
            on_status=on_status,
            bound_headers=tuple(bound_headers),
            default_poll_interval=default_poll_interval,
        )


    class AccessRequestTransport(hx.BaseTransport):
        """An httpx transport: on a requestable denial (a 511 captive document, or an MCP -32042 error
        carrying `data.access_request`) it submits one access request, waits for the person's decision
        honouring Retry-After for at most `max_wait` seconds, and sends the call again once approved.
        Otherwise it raises `Denied`, `Expired`, `Cancelled`, `Failed`, `TimedOut` or `Rejected`.

        `transport` is the wrapped transport (default `hx.HTTPTransport()`; give it `proxy=` to go
        through the gateway as a forward proxy). `portal` is the client used for the Access Request
        Service (default: a plain `hx.Client`); the agent's own headers (its token) are never sent there.
        The `user-portal-url` is logged (logger `missiongate_client`) for the person, never opened.
        """

        def __init__(
            self,
            transport: Optional[hx.BaseTransport] = None,
            *,
            justification: Justification = None,
            max_wait: float = 300.0,
            on_status: Optional[Callable[[TaskUpdate], None]] = None,
            bound_headers: tuple[str, ...] = (),
            mcp: bool = True,
            portal: Optional[hx.Client] = None,
            default_poll_interval: float = 2.0,
        ) -> None:
            self._inner = transport if transport is not None else hx.HTTPTransport()
            self._portal = portal if portal is not None else hx.Client(timeout=30.0)
            self._own_portal = portal is None
            self._mcp = mcp
            self.engine = Engine(_options(justification, max_wait, on_status, bound_headers, default_poll_interval))

        def _send(self, request: hx.Request) -> tuple[hx.Response, Optional[Denial]]:
            response = self._inner.handle_request(request)
            if not _worth_reading(request, response, self._mcp):
                return response, None
            try:
                raw = b"".join(response.iter_raw())
            finally:
                response.close()
            fresh, body = _rebuild(response, raw)
            return fresh, _denial(fresh, body)

        def _portal_call(self, p: Portal) -> Any:
            try:
                return _portal_response(self._portal.request(p.method, p.url, headers=dict(p.headers), content=p.body))
            except hx.HTTPError as e:
                return e

        def handle_request(self, request: hx.Request) -> hx.Response:
            request.read()
            return drive(self.engine.flow(_info(request), _max_wait(request)), lambda: self._send(request), self._portal_call)

        def close(self) -> None:
            self._inner.close()
            if self._own_portal:
                self._portal.close()


    class AsyncAccessRequestTransport(hx.AsyncBaseTransport):
        """The asyncio form of `AccessRequestTransport` (for `hx.AsyncClient`, and so for the MCP
        Python SDK's Streamable HTTP client through its `httpx_client_factory`)."""

        def __init__(
            self,
            transport: Optional[hx.AsyncBaseTransport] = None,
            *,
            justification: Justification = None,
            max_wait: float = 300.0,
            on_status: Optional[Callable[[TaskUpdate], None]] = None,
            bound_headers: tuple[str, ...] = (),
            mcp: bool = True,
            portal: Optional[hx.AsyncClient] = None,
            default_poll_interval: float = 2.0,
        ) -> None:
            self._inner = transport if transport is not None else hx.AsyncHTTPTransport()
            self._portal = portal if portal is not None else hx.AsyncClient(timeout=30.0)
            self._own_portal = portal is None
            self._mcp = mcp
            self.engine = Engine(_options(justification, max_wait, on_status, bound_headers, default_poll_interval))

        async def _send(self, request: hx.Request) -> tuple[hx.Response, Optional[Denial]]:
            response = await self._inner.handle_async_request(request)
            if not _worth_reading(request, response, self._mcp):
                return response, None
            try:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
            fresh, body = _rebuild(response, raw)
            return fresh, _denial(fresh, body)

        async def _portal_call(self, p: Portal) -> Any:
            try:
                r = await self._portal.request(p.method, p.url, headers=dict(p.headers), content=p.body)
                return _portal_response(r)
            except hx.HTTPError as e:
                return e

        async def handle_async_request(self, request: hx.Request) -> hx.Response:
            import anyio

            await request.aread()
            flow = self.engine.flow(_info(request), _max_wait(request))
            value: Any = None
            while True:
                try:
                    effect = flow.send(value)
                except StopIteration as stop:
                    return stop.value
                if isinstance(effect, Send):
                    value = await self._send(request)
                elif isinstance(effect, Portal):
                    value = await self._portal_call(effect)
                elif isinstance(effect, Sleep):
                    await anyio.sleep(effect.seconds)
                    value = None
                else:  # pragma: no cover
                    raise TypeError(f"unknown effect {effect!r}")

        async def aclose(self) -> None:
            await self._inner.aclose()
            if self._own_portal:
                await self._portal.aclose()

    return AccessRequestTransport, AsyncAccessRequestTransport


AccessRequestTransport, AsyncAccessRequestTransport = transports(httpx)

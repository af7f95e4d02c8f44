"""A `requests` transport adapter that runs the access request dance (needs `requests`)."""

from __future__ import annotations

from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import httpx
import requests
from requests.adapters import HTTPAdapter

from ._core import (
    Engine,
    Justification,
    Options,
    Portal,
    PortalResponse,
    RequestInfo,
    TaskUpdate,
    denial_from_captive,
    denial_from_jsonrpc,
    looks_like_jsonrpc_request,
    media_type_essence,
    CAPTIVE_CONTENT_TYPE,
)
from ._httpx import drive


def _body(request: requests.PreparedRequest) -> bytes:
    b = request.body
    if b is None:
        return b""
    if isinstance(b, str):
        return b.encode("utf-8")
    if isinstance(b, (bytes, bytearray)):
        return bytes(b)
    raise TypeError("missiongate_client: a streamed request body cannot be sent again; pass bytes")


class AccessRequestAdapter(HTTPAdapter):
    """Mount on a `requests.Session` (`session.mount("http://", adapter)`, and `"https://"`): on a
    requestable denial it submits one access request, waits for the person's decision honouring
    Retry-After for at most `max_wait` seconds, and sends the call again once approved; otherwise it
    raises `Denied`, `Expired`, `Cancelled`, `Failed`, `TimedOut` or `Rejected`. Proxies given to the
    session apply to the calls; the Access Request Service is called with `portal` (an `httpx.Client`).
    """

    def __init__(
        self,
        *,
        justification: Justification = None,
        max_wait: float = 300.0,
        on_status: Optional[Callable[[TaskUpdate], None]] = None,
        bound_headers: tuple[str, ...] = (),
        mcp: bool = True,
        portal: Optional[httpx.Client] = None,
        default_poll_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._portal = portal if portal is not None else httpx.Client(timeout=30.0)
        self._own_portal = portal is None
        self._mcp = mcp
        self.engine = Engine(
            Options(
                justification=justification,
                max_wait=max_wait,
                on_status=on_status,
                bound_headers=tuple(bound_headers),
                default_poll_interval=default_poll_interval,
            )
        )

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = _body(request)
        parts = urlsplit(request.url or "")
        info = RequestInfo(
            method=request.method or "GET",
            url=request.url or "",
            path_and_query=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        jsonrpc = self._mcp and looks_like_jsonrpc_request(info.method, info.headers.get("content-type"), body)

        def once() -> Any:
            r = super(AccessRequestAdapter, self).send(request, **kwargs)
            ct = r.headers.get("content-type")
            if r.status_code == 511 and media_type_essence(ct) == CAPTIVE_CONTENT_TYPE:
                return r, denial_from_captive(r.status_code, ct, r.content)
            if jsonrpc and r.status_code == 200 and media_type_essence(ct) == "application/json":
                return r, denial_from_jsonrpc(r.status_code, ct, r.content)
            return r, None

        def portal(p: Portal) -> Any:
            try:
                r = self._portal.request(p.method, p.url, headers=dict(p.headers), content=p.body)
                return PortalResponse(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
            except httpx.HTTPError as e:
                return e

        return drive(self.engine.flow(info), once, portal)

    def close(self) -> None:
        super().close()
        if self._own_portal:
            self._portal.close()

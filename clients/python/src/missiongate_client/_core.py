"""The access request dance, without I/O.

`Engine.flow` is a generator: it yields effects (send the original call, call the Access Request
Service, sleep) and the transport that drives it (sync httpx, async httpx, requests) performs them.
So the three front ends share one implementation of the rules: submit once per denial with an
Idempotency-Key, poll honouring Retry-After within a bounded total wait, retry the call once approved,
raise a typed error otherwise.
"""

from __future__ import annotations

import base64
import datetime as _dt
import email.utils
import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator, Mapping, Optional, Union

logger = logging.getLogger("missiongate_client")

CAPTIVE_CONTENT_TYPE = "application/captive+json"
#: MCP URL-elicitation-required error (MCP 2025-11-25), which missiongate uses for a requestable denial.
URL_ELICITATION_REQUIRED = -32042

TERMINAL = ("approved", "denied", "expired", "cancelled", "failed")


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


class AccessRequestError(Exception):
    """The call was refused by the gateway and the access request did not end in an approval."""

    def __init__(
        self,
        message: str,
        *,
        task_id: Optional[str] = None,
        evaluation_id: Optional[str] = None,
        status: Optional[str] = None,
        reason: Optional[str] = None,
        user_portal_url: Optional[str] = None,
        problem: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.evaluation_id = evaluation_id
        self.status = status
        self.reason = reason
        self.user_portal_url = user_portal_url
        self.problem = dict(problem) if problem else None


class Denied(AccessRequestError):
    """A person denied the access request."""


class Expired(AccessRequestError):
    """The access request (or the denial it answers) expired before a person decided."""


class Cancelled(AccessRequestError):
    """The access request was cancelled."""


class Failed(AccessRequestError):
    """The Access Request Service reports the task as failed."""


class TimedOut(AccessRequestError):
    """No decision within the caller's bound (`max_wait`); the task stays pending and a retry of the
    same call resumes waiting for it instead of asking again."""


class Rejected(AccessRequestError):
    """The Access Request Service refused the submission (an `application/problem+json` answer)."""


# ------------------------------------------------------------------------------------------------
# What the gateway said, and what the agent sent
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Denial:
    """A requestable denial: the AuthZEN access-request document of a 511 captive document (its
    `access-request` member) or of an MCP -32042 error (its `data.access_request`)."""

    evaluation_id: str
    access_request: Mapping[str, Any]
    endpoint: str
    binding_token: str
    expires_at: str
    user_portal_url: Optional[str]
    kind: str  # "captive" or "mcp"

    @property
    def resource_id(self) -> str:
        return str(_get(self.access_request, "resource", "id") or "")

    @property
    def action_name(self) -> str:
        return str(_get(self.access_request, "action", "name") or "")

    @property
    def parameter_digest(self) -> Optional[str]:
        d = _get(self.access_request, "action", "properties", "parameter_digest")
        return d if isinstance(d, str) else None


@dataclass(frozen=True)
class RequestInfo:
    """The original call, as far as the dance needs it."""

    method: str
    url: str
    path_and_query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class TaskUpdate:
    """What `on_status` receives: after the submission and after every poll."""

    task_id: str
    status: str
    evaluation_id: str
    user_portal_url: Optional[str]
    #: Seconds the service asked to wait before the next poll (None once the task has ended).
    retry_after: Optional[float]
    reason: Optional[str] = None


@dataclass(frozen=True)
class PortalResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


# Effects the driver performs.
@dataclass(frozen=True)
class Send:
    """Send the original call again; the driver answers `(response, Denial | None)`."""


@dataclass(frozen=True)
class Portal:
    """Call the Access Request Service; the driver answers a PortalResponse, or an Exception on a
    transport failure."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: Optional[bytes] = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Effect = Union[Send, Portal, Sleep]
Justification = Union[None, str, Callable[[RequestInfo, Denial], Optional[str]]]


def _get(doc: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(k)
    return doc


def media_type_essence(content_type: Optional[str]) -> Optional[str]:
    if content_type is None:
        return None
    essence = content_type.split(";", 1)[0].strip().lower()
    return essence or None


def _is_json_essence(essence: str) -> bool:
    return essence == "application/json" or essence.endswith("+json")


def _denial_from_document(ar: Any, user_portal_url: Any, kind: str) -> Optional[Denial]:
    ctx = _get(ar, "context")
    hint = _get(ctx, "access_request")
    values = [_get(ctx, "evaluation_id"), _get(hint, "endpoint"), _get(hint, "binding_token"), _get(hint, "expires_at")]
    if not all(isinstance(v, str) and v for v in values):
        return None
    return Denial(
        evaluation_id=values[0],
        access_request=ar,
        endpoint=values[1],
        binding_token=values[2],
        expires_at=values[3],
        user_portal_url=user_portal_url if isinstance(user_portal_url, str) else None,
        kind=kind,
    )


def denial_from_captive(status: int, content_type: Optional[str], body: bytes) -> Optional[Denial]:
    """The denial in a 511 `application/captive+json` answer (SPEC section 4), or None."""
    if status != 511 or media_type_essence(content_type) != CAPTIVE_CONTENT_TYPE:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if _get(doc, "captive") is not True:
        return None
    return _denial_from_document(_get(doc, "access-request"), _get(doc, "user-portal-url"), "captive")


def denial_from_jsonrpc(status: int, content_type: Optional[str], body: bytes) -> Optional[Denial]:
    """The denial in an MCP JSON-RPC `-32042` error whose `data.access_request` is present (SPEC
    section 7), or None. The person's URL is `data.elicitations[0].url`."""
    if status != 200 or media_type_essence(content_type) != "application/json":
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    err = _get(doc, "error")
    if _get(err, "code") != URL_ELICITATION_REQUIRED:
        return None
    data = _get(err, "data")
    url = None
    elicitations = _get(data, "elicitations")
    if isinstance(elicitations, list) and elicitations and isinstance(elicitations[0], Mapping):
        url = elicitations[0].get("url")
    return _denial_from_document(_get(data, "access_request"), url, "mcp")


def looks_like_jsonrpc_request(method: str, content_type: Optional[str], body: bytes) -> bool:
    """A JSON-RPC request object POSTed as JSON: the only calls whose 200 answer may be a -32042."""
    if method.upper() != "POST" or not body or media_type_essence(content_type) != "application/json":
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, Mapping) and doc.get("jsonrpc") == "2.0" and isinstance(doc.get("method"), str)


def parameter_object(denial: Denial, info: RequestInfo, bound_headers: tuple[str, ...] = ()) -> Optional[dict]:
    """The parameter object a denial bound to a `parameter_digest` must be requested with: the MCP
    Tool Call Profile for an MCP denial (SPEC section 7), else the HTTP Operation Profile version 2
    (section 6). None when the denial is not bound to parameters."""
    if denial.parameter_digest is None:
        return None
    target = denial.resource_id + (info.path_and_query or "/")
    if denial.kind == "mcp":
        call = json.loads(info.body)
        params = call.get("params") if isinstance(call.get("params"), Mapping) else {}
        arguments = params.get("arguments")
        return {
            "target": target,
            "mcp_method": call.get("method"),
            "tool": params.get("name"),
            "arguments": arguments if isinstance(arguments, Mapping) else {},
        }
    obj: dict[str, Any] = {"method": info.method.upper(), "target": target}
    headers = {h.lower(): info.headers[h.lower()] for h in bound_headers if h.lower() in info.headers}
    if headers:
        obj["headers"] = headers
    if info.body:
        essence = media_type_essence(info.headers.get("content-type")) or "application/octet-stream"
        obj["content_type"] = essence
        if _is_json_essence(essence):
            obj["body"] = json.loads(info.body)
        else:
            digest = hashlib.sha256(info.body).digest()
            obj["body_sha256"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return obj


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """`Retry-After` as seconds: delta-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _rfc3339_ts(s: str) -> Optional[float]:
    try:
        return _dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------
# The engine
# ------------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One denial (by evaluation id) and the one access request made for it."""

    denial: Denial
    idempotency_key: str
    body: bytes
    task_id: Optional[str] = None
    status_endpoint: Optional[str] = None
    status: str = "new"
    reason: Optional[str] = None
    next_poll: float = 0.0  # monotonic time before which the service asked us not to poll
    retry_after: Optional[float] = None
    final: Optional[AccessRequestError] = None


@dataclass
class Options:
    justification: Justification = None
    #: Longest total wait for a decision, per call, in seconds.
    max_wait: float = 300.0
    on_status: Optional[Callable[[TaskUpdate], None]] = None
    #: Effect-bearing header names the deployment binds for the destination (SPEC section 6).
    bound_headers: tuple[str, ...] = ()
    #: Poll interval when the service gives no Retry-After.
    default_poll_interval: float = 2.0
    #: After an approval the gateway may still answer from its short denial memory (1 s by
    #: default): the call is sent again at most this many times, this far apart, while the same
    #: denial comes back. A denied call never reached the destination, so this cannot repeat it.
    approved_resends: int = 3
    approved_resend_delay: float = 1.1


class Engine:
    """Shared state (one access request per denial) and the flow of one call."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def forget(self, evaluation_id: str) -> None:
        """Drop what is remembered about a denial, so that the next refusal asks again."""
        with self._lock:
            self._entries.pop(evaluation_id, None)

    def _entry(self, denial: Denial, info: RequestInfo) -> _Entry:
        with self._lock:
            now = time.time()
            for k in [k for k, e in self._entries.items() if e.final and (_rfc3339_ts(e.denial.expires_at) or 0) < now]:
                del self._entries[k]
            e = self._entries.get(denial.evaluation_id)
            if e is None:
                e = _Entry(denial=denial, idempotency_key="mg-" + secrets.token_urlsafe(24), body=self._submission(denial, info))
                self._entries[denial.evaluation_id] = e
            return e

    def _submission(self, denial: Denial, info: RequestInfo) -> bytes:
        j = self.options.justification
        text = j(info, denial) if callable(j) else j
        body: dict[str, Any] = {
            "denial": {
                "evaluation_id": denial.evaluation_id,
                "binding_token": denial.binding_token,
                "expires_at": denial.expires_at,
            }
        }
        if text:
            body["justification"] = text
        params = parameter_object(denial, info, self.options.bound_headers)
        if params is not None:
            body["parameters"] = params
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def _notify(self, e: _Entry) -> None:
        if e.task_id and self.options.on_status is not None:
            self.options.on_status(
                TaskUpdate(
                    task_id=e.task_id,
                    status=e.status,
                    evaluation_id=e.denial.evaluation_id,
                    user_portal_url=e.denial.user_portal_url,
                    retry_after=e.retry_after if e.status == "pending" else None,
                    reason=e.reason,
                )
            )

    def _error(self, cls: type, message: str, e: _Entry, problem: Optional[Mapping[str, Any]] = None) -> AccessRequestError:
        return cls(
            message,
            task_id=e.task_id,
            evaluation_id=e.denial.evaluation_id,
            status=e.status,
            reason=e.reason,
            user_portal_url=e.denial.user_portal_url,
            problem=problem,
        )

    def flow(self, info: RequestInfo, max_wait: Optional[float] = None) -> Generator[Effect, Any, Any]:
        """Send the call; on a requestable denial, obtain a decision and act on it."""
        response, denial = yield Send()
        if denial is None:
            return response
        deadline = time.monotonic() + (self.options.max_wait if max_wait is None else max_wait)
        e = self._entry(denial, info)
        if e.final is not None:
            raise self._error(type(e.final), str(e.final), e, e.final.problem)
        if e.task_id is None:
            yield from self._submit(e, deadline)
            logger.warning(
                "missiongate: %s on %s (%s %s) is outside the agent's Mission; access request %s awaits a "
                "person's decision at %s",
                denial.action_name or "?",
                denial.resource_id or "?",
                info.method,
                info.url,
                e.task_id,
                denial.user_portal_url or "(no user-portal-url given)",
            )
            self._notify(e)
        yield from self._wait(e, deadline)
        # Approved: the entry is done with (a later refusal of the same call asks again).
        self.forget(denial.evaluation_id)
        for _ in range(self.options.approved_resends):
            response, again = yield Send()
            if again is None or again.evaluation_id != denial.evaluation_id:
                return response
            if time.monotonic() + self.options.approved_resend_delay > deadline:
                break
            yield Sleep(self.options.approved_resend_delay)
        logger.warning("missiongate: access request %s was approved but the gateway still refuses the call", e.task_id)
        return response

    def _submit(self, e: _Entry, deadline: float) -> Generator[Effect, Any, None]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", "Idempotency-Key": e.idempotency_key}
        attempt = 0
        while True:
            attempt += 1
            r = yield Portal("POST", e.denial.endpoint, headers, e.body)
            wait: Optional[float] = None
            if isinstance(r, PortalResponse):
                doc = r.json()
                task = _get(doc, "task")
                if r.status in (200, 201, 202) and isinstance(_get(task, "id"), str):
                    self._take(e, task, None)
                    return
                problem = doc if isinstance(doc, Mapping) else {"status": r.status}
                if r.status in (429, 503):
                    wait = retry_after_seconds(r.headers.get("retry-after")) or self.options.default_poll_interval
                elif r.status == 410:
                    e.status = "expired"
                    raise self._error(Expired, f"the denial expired before it was requested: {problem.get('detail')}", e, problem)
                else:
                    e.status = "rejected"
                    err = self._error(Rejected, f"the access request was refused ({r.status}): {problem.get('detail')}", e, problem)
                    # Another call with the same denial would be refused the same way.
                    self.forget(e.denial.evaluation_id)
                    raise err
            else:
                logger.info("missiongate: access request submission failed (%s); retrying with the same key", r)
                wait = min(self.options.default_poll_interval * attempt, 10.0)
            if time.monotonic() + wait > deadline:
                e.status = "unsubmitted"
                self.forget(e.denial.evaluation_id)
                raise self._error(TimedOut, "the access request could not be submitted in time", e)
            yield Sleep(wait)

    def _take(self, e: _Entry, task: Mapping[str, Any], retry_after: Optional[float]) -> None:
        e.task_id = str(task.get("id"))
        e.status = str(task.get("status") or "pending")
        endpoint = task.get("status_endpoint")
        if isinstance(endpoint, str) and endpoint:
            e.status_endpoint = endpoint
        elif e.status_endpoint is None:
            e.status_endpoint = e.denial.endpoint.rstrip("/") + "/" + e.task_id
        reason = task.get("reason")
        e.reason = reason if isinstance(reason, str) else None
        e.retry_after = retry_after
        e.next_poll = time.monotonic() + (retry_after if retry_after is not None else 0.0)

    def _wait(self, e: _Entry, deadline: float) -> Generator[Effect, Any, None]:
        failures = 0
        while True:
            if e.status == "approved":
                return
            if e.status in TERMINAL:
                cls = {"denied": Denied, "expired": Expired, "cancelled": Cancelled}.get(e.status, Failed)
                what = f"access request {e.task_id} was {e.status}" + (f": {e.reason}" if e.reason else "")
                err = self._error(cls, what, e)
                e.final = err
                raise err
            now = time.monotonic()
            wait = max(0.0, e.next_poll - now)
            if now + wait > deadline:
                # The next poll the service allows falls after the caller's bound: waiting for it
                # would only overrun the bound. The task stays pending; a retry resumes it.
                raise self._error(TimedOut, f"no decision on access request {e.task_id} within the bound", e)
            if wait > 0:
                yield Sleep(wait)
            assert e.status_endpoint is not None
            r = yield Portal("GET", e.status_endpoint, {"Accept": "application/json"})
            if not isinstance(r, PortalResponse):
                failures += 1
                logger.info("missiongate: polling %s failed (%s)", e.task_id, r)
                e.next_poll = time.monotonic() + min(self.options.default_poll_interval * failures, 10.0)
                continue
            ra = retry_after_seconds(r.headers.get("retry-after"))
            doc = r.json()
            task = _get(doc, "task")
            if r.status == 200 and isinstance(_get(task, "id"), str):
                failures = 0
                self._take(e, task, ra if ra is not None else self.options.default_poll_interval)
                self._notify(e)
                continue
            if r.status in (404, 410):
                e.status = "expired"
                e.reason = _get(doc, "detail") if isinstance(_get(doc, "detail"), str) else None
                continue
            failures += 1
            e.next_poll = time.monotonic() + (ra if ra is not None else min(self.options.default_poll_interval * failures, 10.0))

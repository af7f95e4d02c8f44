"""missiongate agent-side client: turn a requestable denial into an access request.

- `AccessRequestTransport` / `AsyncAccessRequestTransport`: httpx transports.
- `AccessRequestAdapter`: a `requests` adapter (import needs `requests`).
- Typed errors: `Denied`, `Expired`, `Cancelled`, `Failed`, `TimedOut`, `Rejected`, all
  `AccessRequestError`.
"""

from ._core import (
    AccessRequestError,
    Cancelled,
    Denial,
    Denied,
    Expired,
    Failed,
    Rejected,
    RequestInfo,
    TaskUpdate,
    TimedOut,
    URL_ELICITATION_REQUIRED,
)
from ._httpx import MAX_WAIT, AccessRequestTransport, AsyncAccessRequestTransport

__all__ = [
    "AccessRequestAdapter",
    "AccessRequestError",
    "AccessRequestTransport",
    "AsyncAccessRequestTransport",
    "Cancelled",
    "Denial",
    "Denied",
    "Expired",
    "Failed",
    "MAX_WAIT",
    "Rejected",
    "RequestInfo",
    "TaskUpdate",
    "TimedOut",
    "URL_ELICITATION_REQUIRED",
]


def __getattr__(name: str):  # the requests adapter is imported on first use: requests is optional
    if name == "AccessRequestAdapter":
        from ._requests import AccessRequestAdapter

        return AccessRequestAdapter
    raise AttributeError(name)

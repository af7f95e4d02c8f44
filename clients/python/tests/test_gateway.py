"""The client against the real gateway (Envoy with the missiongate filter) and the real portal.

A person's decision is the portal's approver API, called from the client's `on_status` hook (so it
happens while the client is waiting, at a chosen point of the dance)."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
import requests

from missiongate_client import (
    MAX_WAIT,
    AccessRequestAdapter,
    AccessRequestTransport,
    AsyncAccessRequestTransport,
    Cancelled,
    Denied,
    Expired,
    TaskUpdate,
    TimedOut,
)

from conftest import DESTINATION, Stack


class Recorder:
    """An `on_status` hook that records (monotonic time, update) and runs `act(update, n)`."""

    def __init__(self, act=None):
        self.updates: list[tuple[float, TaskUpdate]] = []
        self.act = act

    def __call__(self, u: TaskUpdate) -> None:
        self.updates.append((time.monotonic(), u))
        if self.act:
            self.act(u, len(self.updates))

    def statuses(self) -> list[str]:
        return [u.status for _, u in self.updates]


def agent(stack: Stack, token: str, **kw) -> tuple[httpx.Client, AccessRequestTransport]:
    t = AccessRequestTransport(httpx.HTTPTransport(proxy=stack.proxy), **kw)
    return httpx.Client(transport=t, headers={"Authorization": f"Bearer {token}"}, timeout=30.0), t


def test_an_allowed_call_passes_untouched(stack):
    mid, token = stack.mission(["http.get"])
    client, _ = agent(stack, token)
    r = client.get(f"{DESTINATION}/v1/invoices?status=open")
    assert r.status_code == 200, r.text
    assert r.json()["uri"] == "/v1/invoices?status=open"
    assert stack.requests_of(mid) == []


def test_approved_after_the_retry_after_the_call_goes_through_once(stack, caplog):
    mid, token = stack.mission(["http.get"])

    def person(u: TaskUpdate, n: int) -> None:
        if n == 2:  # after the first poll: the client now has to wait out its Retry-After
            assert u.status == "pending" and u.retry_after == 5.0, u
            stack.approve(u.task_id, 60)

    hook = Recorder(person)
    client, _ = agent(stack, token, justification="need the Q3 report", on_status=hook, max_wait=60)
    with caplog.at_level(logging.WARNING, logger="missiongate_client"):
        r = client.get(f"{DESTINATION}/v2/reports?q=1")
    assert r.status_code == 200, r.text
    assert r.json()["uri"] == "/v2/reports?q=1"
    assert hook.statuses() == ["pending", "pending", "approved"]
    # Retry-After honoured: the poll after "Retry-After: 5" came no sooner than 5 s later.
    (t_pending, _), (t_approved, _) = hook.updates[1], hook.updates[2]
    assert t_approved - t_pending >= 5.0, t_approved - t_pending
    # One access request, with the caller's justification; the person's URL was logged, not opened.
    reqs = stack.requests_of(mid)
    assert len(reqs) == 1 and reqs[0]["justification"] == "need the Q3 report", reqs
    assert reqs[0]["task"]["status"] == "approved"
    portal_url = reqs[0]["denial"]["user_portal_url"]
    assert any(portal_url in rec.getMessage() for rec in caplog.records), caplog.text
    assert hook.updates[0][1].user_portal_url == portal_url


def test_denied_raises_and_a_retry_does_not_ask_again(stack):
    mid, token = stack.mission(["http.get"])
    hook = Recorder(lambda u, n: stack.deny(u.task_id, "not for this mission") if n == 1 else None)
    s = requests.Session()
    s.mount("http://", AccessRequestAdapter(justification="please", on_status=hook, max_wait=60))
    s.proxies = {"http": stack.proxy}
    s.headers["Authorization"] = f"Bearer {token}"
    with pytest.raises(Denied) as e:
        s.get(f"{DESTINATION}/v2/reports")
    assert e.value.status == "denied" and e.value.reason == "not for this mission"
    assert e.value.task_id == hook.updates[0][1].task_id
    # The caller retries: the same denial (same evaluation id) is not requested again.
    with pytest.raises(Denied):
        s.get(f"{DESTINATION}/v2/reports")
    reqs = stack.requests_of(mid)
    assert len(reqs) == 1 and reqs[0]["task"]["status"] == "denied", reqs


def test_cancelled_raises(stack):
    mid, token = stack.mission(["http.get"])

    def cancel(u: TaskUpdate, n: int) -> None:
        if n == 1:
            r = httpx.post(f"http://127.0.0.1:{stack.portal}/access/v1/requests/{u.task_id}/cancel")
            assert r.status_code == 200, r.text

    client, _ = agent(stack, token, on_status=Recorder(cancel), max_wait=60)
    with pytest.raises(Cancelled) as e:
        client.get(f"{DESTINATION}/v3/anything")
    assert e.value.status == "cancelled"
    assert [r["task"]["status"] for r in stack.requests_of(mid)] == ["cancelled"]


def test_expired_raises(short_task_stack):
    stack = short_task_stack
    mid, token = stack.mission(["http.get"])
    hook = Recorder()
    client, _ = agent(stack, token, on_status=hook, max_wait=60)
    with pytest.raises(Expired) as e:
        client.get(f"{DESTINATION}/v2/reports")
    assert e.value.status == "expired"
    # Pending when submitted (and, unless the machine is slow, at the first poll), expired later.
    assert hook.statuses()[0] == "pending" and hook.statuses()[-1] == "expired", hook.statuses()
    assert len(stack.requests_of(mid)) == 1


def test_time_out_then_retry_resumes_the_same_request(stack):
    mid, token = stack.mission(["http.get"])
    hook = Recorder()
    client, _ = agent(stack, token, on_status=hook, max_wait=2)
    started = time.monotonic()
    with pytest.raises(TimedOut) as e:
        client.get(f"{DESTINATION}/v2/reports?r=1")
    # The next poll Retry-After (5 s) allows would fall after the 2 s bound: no point in waiting.
    assert time.monotonic() - started < 4.5
    task = e.value.task_id
    assert task and e.value.status == "pending"
    polls = len(hook.updates)
    # The caller retries at once: no second access request, and no poll before Retry-After.
    with pytest.raises(TimedOut) as again:
        client.get(f"{DESTINATION}/v2/reports?r=1")
    assert again.value.task_id == task
    assert len(hook.updates) == polls
    # The person approves; the caller retries with a longer bound and the call goes through.
    stack.approve(task, 60)
    r = client.get(f"{DESTINATION}/v2/reports?r=1", extensions={MAX_WAIT: 30})
    # Goes through: either the gateway already allows it (the approval made the PDP say yes), or it
    # still answers from its 1 s denial memory and the client polls its task and resends.
    assert r.status_code == 200, r.text
    reqs = stack.requests_of(mid)
    assert len(reqs) == 1 and reqs[0]["task"]["id"] == task, reqs


def test_async_consequential_call_is_requested_with_its_parameters(stack):
    """A POST bound to its parameter_digest: the client submits the HTTP Operation Profile's
    parameter object, the person approves, the approved call goes through exactly once."""
    mid, token = stack.mission(["http.get"])
    body = {"amount": "423.50", "currency": "USD", "to": "acct_123"}

    async def main() -> list[httpx.Response]:
        hook = Recorder(lambda u, n: stack.approve(u.task_id, 60) if n == 2 else None)
        t = AsyncAccessRequestTransport(httpx.AsyncHTTPTransport(proxy=stack.proxy), on_status=hook, max_wait=60)
        async with httpx.AsyncClient(transport=t, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            first = await c.post(f"{DESTINATION}/v1/payments", json=body)
            # The approval was single use: the same call again is refused as a reused permit, a
            # refusal that is not requestable, so the client hands it back untouched.
            second = await c.post(f"{DESTINATION}/v1/payments", json=body)
            return [first, second]

    r, again = asyncio.run(main())
    assert r.status_code == 200, r.text
    assert r.json()["uri"] == "/v1/payments" and r.json()["method"] == "POST"
    assert again.status_code == 403 and again.json()["reason"] == "parameter_violation", again.text
    reqs = stack.requests_of(mid)
    assert [a["task"]["status"] for a in reqs] == ["approved"], reqs
    assert reqs[0]["parameters"] == {
        "method": "POST",
        "target": "https://api.partner.example/v1/payments",
        "content_type": "application/json",
        "body": body,
    }

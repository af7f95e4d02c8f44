"""The real gateway for the client's tests: `target/debug/stack` (tests/src/bin/stack.rs) starts the
real Envoy with the built filter, the real portal and an echo upstream from the Rust test kit, prints
their ports as one JSON line and runs until its stdin closes."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
STACK = Path(os.environ.get("MISSIONGATE_STACK", REPO / "target" / "debug" / "stack"))
DESTINATION = "http://api.partner.example"


class Stack:
    def __init__(self, *portal_args: str, stack_args: tuple[str, ...] = ()) -> None:
        if not STACK.exists():
            pytest.fail(f"{STACK} is missing: run `cargo build -p missiongate-tests --bin stack` (make test-clients does)")
        self.proc = subprocess.Popen(
            [str(STACK), *stack_args, "--", *portal_args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=120)
        except queue.Empty:
            self.proc.kill()
            pytest.fail("the stack did not start within 120 s")
        if not line.strip():
            pytest.fail(f"the stack exited: {self.proc.wait()}")
        info: dict[str, Any] = json.loads(line)
        self.envoy = int(info["envoy"])
        self.portal = int(info["portal"])
        self.operator_token = str(info["operator_token"])
        self.logs = (info["envoy_log"], info["portal_log"])
        self.op_client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.portal}",
            headers={"Authorization": f"Bearer {self.operator_token}"},
            timeout=30.0,
        )

    def close(self) -> None:
        self.op_client.close()
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("the stack did not stop within 60 s")
        # The stack checks every Envoy it stops for Wasm VM failures and exits non-zero on one.
        assert code == 0, f"the stack exited with {code} (logs: {self.logs})"

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.envoy}"

    def op(self, method: str, path: str, body: Optional[dict] = None) -> httpx.Response:
        return self.op_client.request(method, path, json=body if body is not None else ({} if method == "POST" else None))

    def mission(self, actions: list[str], resource: str = "https://api.partner.example/v1") -> tuple[str, str]:
        """An active Mission over `resource` (prefix) for agent-7, and its token."""
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        r = self.op(
            "POST",
            "/operator/missions",
            {
                "intent": {"goal": "Reconcile invoices", "resources": ["https://api.partner.example"], "expires_at": expires},
                "authorization_details": [
                    {
                        "type": "mission_resource_access",
                        "resource": resource,
                        "resource_match": "prefix",
                        "actions": actions,
                    }
                ],
                "client_id": "agent-7",
            },
        )
        assert r.status_code == 201, r.text
        mid = r.json()["id"]
        assert self.op("POST", f"/operator/missions/{mid}/approve").status_code == 200
        r = self.op("POST", f"/operator/missions/{mid}/token")
        assert r.status_code == 200, r.text
        return mid, r.json()["access_token"]

    def approve(self, task: str, seconds: int = 60) -> None:
        r = self.op("POST", f"/operator/access-requests/{task}/approve", {"duration_seconds": seconds})
        assert r.status_code == 200, r.text

    def deny(self, task: str, reason: str) -> None:
        r = self.op("POST", f"/operator/access-requests/{task}/deny", {"reason": reason})
        assert r.status_code == 200, r.text

    def requests_of(self, mission_id: str) -> list[dict]:
        """Every access request (any status) of a Mission, as the operator sees them."""
        r = self.op("GET", "/operator/access-requests?limit=1000")
        assert r.status_code == 200, r.text
        return [a for a in r.json()["access_requests"] if (a.get("denial", {}).get("mission") or {}).get("id") == mission_id]


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    yield s
    s.close()


@pytest.fixture(scope="session")
def short_task_stack():
    """A portal whose pending access requests expire after 2 s."""
    s = Stack("--task-ttl-seconds", "2")
    yield s
    s.close()

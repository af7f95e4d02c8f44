"""Without a gateway: the client recognises exactly the requestable denials of SPEC sections 4 and 7
and builds the parameter objects whose digests are the SPEC's vectors."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import email.utils

from missiongate_client._core import (
    Denial,
    RequestInfo,
    denial_from_captive,
    denial_from_jsonrpc,
    parameter_object,
    retry_after_seconds,
)


def access_request(digest=None, resource="https://mcp.partner.example"):
    action = {"name": "mcp.tool.pay_invoice"}
    if digest:
        action["properties"] = {"parameter_digest": digest}
    return {
        "subject": {"type": "agent", "id": "agent-7"},
        "resource": {"type": "egress", "id": resource},
        "action": action,
        "context": {
            "evaluation_id": "eval_1",
            "reason": "egress_not_allowed",
            "mission": {"id": "msn_1", "issuer": "https://as.example"},
            "access_request": {
                "endpoint": "https://portal.example/access/v1/requests",
                "expires_at": "2026-11-22T14:25:00Z",
                "binding_token": "a.b.c",
            },
        },
    }


def mcp_error(code, ar):
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "error": {
                "code": code,
                "message": "approval needed",
                "data": {
                    "elicitations": [{"mode": "url", "url": "https://portal.example/portal/d/x", "message": "m", "elicitationId": "eval_1"}],
                    "access_request": ar,
                },
            },
        }
    ).encode()


def test_the_mcp_url_elicitation_error_is_a_denial():
    d = denial_from_jsonrpc(200, "application/json", mcp_error(-32042, access_request()))
    assert d is not None and d.kind == "mcp"
    assert (d.evaluation_id, d.endpoint, d.binding_token) == ("eval_1", "https://portal.example/access/v1/requests", "a.b.c")
    assert d.user_portal_url == "https://portal.example/portal/d/x"
    assert denial_from_jsonrpc(200, "application/json", mcp_error(-32001, access_request())) is None
    assert denial_from_jsonrpc(200, "application/json", mcp_error(-32042, None)) is None
    assert denial_from_jsonrpc(200, "text/event-stream", mcp_error(-32042, access_request())) is None
    assert denial_from_jsonrpc(200, "application/json", b"not json") is None


def test_the_captive_document_is_a_denial():
    body = json.dumps({"captive": True, "user-portal-url": "https://p/x", "access-request": access_request()}).encode()
    d = denial_from_captive(511, "application/captive+json", body)
    assert d is not None and d.kind == "captive" and d.user_portal_url == "https://p/x"
    assert denial_from_captive(403, "application/captive+json", body) is None
    assert denial_from_captive(511, "application/json", body) is None
    assert denial_from_captive(511, "application/captive+json", b'{"captive": false, "seconds-remaining": 3}') is None


def digest(obj) -> str:
    # JCS equals sorted-keys compact JSON for these ASCII, string-only objects.
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha-256:" + base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def denial(dig, kind, resource):
    return Denial("eval_1", access_request(dig, resource), "https://portal.example/access/v1/requests", "a.b.c", "2026-11-22T14:25:00Z", None, kind)


def info(method, path, content_type, body):
    return RequestInfo(method, "http://x" + path, path, {"content-type": content_type} if content_type else {}, body)


def test_parameter_objects_digest_to_the_spec_vectors():
    m1 = b'{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"pay_invoice","_meta":{"p":1},"arguments":{"invoice":"inv_842","amount":"423.50","currency":"USD"}}}'
    m1_digest = "sha-256:VumVMDaxUyrb1aj7IoSEwyzXCgSy83iqcrdTFe30x_c"
    p = parameter_object(denial(m1_digest, "mcp", "https://mcp.partner.example"), info("POST", "/mcp", "application/json", m1))
    assert digest(p) == m1_digest
    v2 = b'{ "to" : "acct_123", "currency":"USD",\n "amount":"423.50" }'
    v2_digest = "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk"
    d = denial(v2_digest, "captive", "https://api.partner.example")
    assert digest(parameter_object(d, info("POST", "/v1/payments", "Application/JSON; charset=utf-8", v2))) == v2_digest
    v7 = parameter_object(d, info("POST", "/upload", "text/plain", b"hello, partner"))
    assert digest(v7) == "sha-256:Vg-10WbE6ITI1jhkU1Xd2_G32jL6sbxiQFQldE9WdYI"
    v12 = parameter_object(d, info("PUT", "/blob", None, b"hello, partner"))
    assert digest(v12) == "sha-256:SdgghQ-PAioTqxAgBA-ZHfFdEub769L-JCEJO4HFjLU"
    assert parameter_object(denial(None, "captive", "https://api.partner.example"), info("GET", "/", None, b"")) is None


def test_retry_after_takes_seconds_and_dates():
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_seconds(later) <= 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None

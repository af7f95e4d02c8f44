//! End-to-end tests of the reference Mission authority: the real binary, a real SQLite file in a
//! temporary directory, real HTTP on 127.0.0.1.

// clippy.toml allows these inside #[test] functions only; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use missiongate_testkit::portal::{PortalCmd, PortalProcess};
use missiongate_wire::claims::{
    AccessTokenClaims, MissionState, MissionStatusClaims, PollResponse, SetClaims, EVENT_MISSION_STATE,
};
use missiongate_wire::jose::{verify_compact, Compact, Header, JwkSet, SigningKey};
use missiongate_wire::time::{format_rfc3339, parse_rfc3339};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::Command;

/// The test kit's Postgres server (`MISSIONGATE_TEST_DB=postgres` runs these tests against it).
use missiongate_testkit::postgres;

const BIN: &str = env!("CARGO_BIN_EXE_captive-portal");
const OP: &str = "test-operator-token-0123456789abcdef";
const ISS: &str = "https://as.test";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Portal {
    process: PortalProcess,
    url: String,
    http: reqwest::Client,
    /// A client presenting the gateway credential (Mission Status and the event feed answer gateways only).
    gw: reqwest::Client,
}

/// The gateway credential the tests configure.
const GW: &str = "test-gateway-credential-0123456789";
/// The gateway audience the tests configure (the `aud` of state-event SETs).
const GW_AUD: &str = "https://gateway.missiongate.local";

impl Portal {
    async fn start(db: &Path, extra: &[&str]) -> Portal {
        Self::try_start(db, ISS, extra).await.expect("portal starts")
    }

    async fn try_start(db: &Path, issuer: &str, extra: &[&str]) -> Result<Portal, String> {
        let cmd = PortalCmd::new(BIN, postgres::db_arg(db))
            .issuer(issuer)
            .operator_token(OP)
            .gateway(GW, GW_AUD)
            .args(extra)
            .env("RUST_LOG", "info")
            .log(db.with_extension(format!("log{}", now())))
            .ready_within(Duration::from_secs(20));
        let process = tokio::task::spawn_blocking(move || cmd.start()).await.map_err(|e| e.to_string())??;
        let url = process.url.clone();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {GW}").parse().unwrap());
        let gw = reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(auth).build().unwrap();
        Ok(Portal { process, url, http, gw })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn op(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(OP);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn op_post(&self, path: &str) -> (StatusCode, Value) {
        self.op(reqwest::Method::POST, path, None).await
    }

    /// Create a Mission expiring in `expires_in` seconds; returns the creation response.
    async fn create(&self, expires_in: i64) -> Value {
        let body = json!({
            "intent": {"goal": "Reconcile Q3 invoices",
                       "resources": ["https://erp.example.com", "https://API.Partner.example:443/v1"],
                       "expires_at": format_rfc3339(now() + expires_in)},
            "authorization_details": [
                {"type": "mission_resource_access", "resource": "https://erp.example.com", "actions": ["invoices.read"]},
                {"type": "mission_resource_access", "resource": "https://API.Partner.example:443/v1",
                 "resource_match": "prefix", "actions": ["http.*"],
                 "constraints": {"max_amount": {"amount": "500.00", "currency": "USD"}}},
                {"type": "mission_resource_access", "resource": "https://erp.example.com/journal", "actions": ["http.post"]}
            ],
            "client_id": "agent-7"
        });
        let (status, v) = self.op(reqwest::Method::POST, "/operator/missions", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    async fn create_active(&self, expires_in: i64) -> Value {
        let m = self.create(expires_in).await;
        let (status, v) = self.op_post(&format!("/operator/missions/{}/approve", id(&m))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        m
    }

    /// `POST /token` with the Mission's client credentials and optional DPoP proof.
    async fn token(&self, m: &Value, dpop: Option<&str>) -> (StatusCode, Value) {
        let form = [
            ("grant_type", "client_credentials"),
            ("mission_id", id(m)),
            ("client_id", m["client_id"].as_str().unwrap()),
            ("client_secret", m["client_secret"].as_str().unwrap()),
        ];
        let mut req = self.http.post(self.url("/token")).form(&form);
        if let Some(p) = dpop {
            req = req.header("DPoP", p);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    async fn jwks(&self) -> JwkSet {
        self.http.get(self.url("/jwks.json")).send().await.unwrap().json().await.unwrap()
    }

    async fn poll(&self, body: Value) -> PollResponse {
        let resp = self.gw.post(self.url("/mission/events")).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    async fn status(&self, mission_id: &str, audience: &str, nonce: &str) -> reqwest::Response {
        let form = [("mission_id", mission_id), ("audience", audience), ("nonce", nonce)];
        self.gw.post(self.url("/mission/status")).form(&form).send().await.unwrap()
    }

    fn pid(&self) -> u32 {
        self.process.pid().unwrap()
    }

    /// Wait until the process exits.
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.process.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill9(mut self) {
        self.process.kill9();
    }
}

fn id(m: &Value) -> &str {
    m["id"].as_str().unwrap()
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authority.db");
    (dir, db)
}

/// Verify a compact JWS against the JWKS by `kid`; returns its header and payload.
fn verify(token: &str, jwks: &JwkSet) -> (Header, Value) {
    let header = Compact::split(token).unwrap().header().unwrap();
    let kid = header.kid.clone().expect("kid");
    let jwk = jwks.keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())).expect("kid in JWKS");
    let (header, payload) = verify_compact(token, &jwk.verifying_key().unwrap()).expect("signature verifies");
    assert_eq!(header.alg, "ES256");
    (header, serde_json::from_slice(&payload).unwrap())
}

fn dpop_proof(key: &SigningKey, htu: &str, iat: i64, jti: &str) -> String {
    let header = json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": key.public_jwk(None)});
    key.sign_compact(&header, &json!({"jti": jti, "htm": "POST", "htu": htu, "iat": iat}))
}

fn set_state(jws: &str, jwks: &JwkSet) -> (SetClaims, MissionState, u64, String) {
    let (header, payload) = verify(jws, jwks);
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    let claims: SetClaims = serde_json::from_value(payload).unwrap();
    let ev = claims.mission_state().expect("mission.lifecycle-change event");
    assert_eq!(ev.mission.issuer, ISS);
    assert!(missiongate_wire::time::parse_rfc3339(&ev.committed_at).is_some());
    assert!(ev.expires_at.as_deref().and_then(missiongate_wire::time::parse_rfc3339).is_some());
    // Every transition names the state it left; only the creation has none.
    assert_eq!(ev.prior_state.is_none(), ev.version == 1, "prior_state on {:?} v{}", ev.state, ev.version);
    (claims.clone(), ev.state, ev.version, ev.mission.id)
}

async fn last_seq(p: &Portal) -> u64 {
    let mut ack: Vec<String> = vec![];
    loop {
        let r = p.poll(json!({"ack": ack, "returnImmediately": true, "maxEvents": 1000})).await;
        let max = r.sets.keys().map(|k| k.parse::<u64>().unwrap()).max();
        match max {
            Some(m) if r.more_available => ack = vec![m.to_string()],
            Some(m) => return m,
            None => return ack.first().map(|a| a.parse().unwrap()).unwrap_or(0),
        }
    }
}

#[tokio::test]
async fn create_approve_token_verifies_against_jwks() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &["--token-lifetime-seconds", "120"]).await;

    let meta: Value =
        p.http.get(p.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["issuer"], ISS);
    assert_eq!(meta["jwks_uri"], "https://as.test/jwks.json");
    assert_eq!(meta["token_endpoint"], "https://as.test/token");
    assert_eq!(meta["mission_status_endpoint"], "https://as.test/mission/status");
    assert_eq!(meta["mission_events_endpoint"], "https://as.test/mission/events");
    assert_eq!(meta["mission_lifecycle_endpoint"], "https://as.test/operator/missions");
    assert!(meta["dpop_signing_alg_values_supported"].as_array().unwrap().contains(&json!("ES256")));

    let m = p.create(3600).await;
    assert!(id(&m).starts_with("msn_") && id(&m).len() >= 4 + 22);
    assert_eq!(m["state"], "pending_approval");
    assert_eq!(m["version"], 1);
    assert!(m["client_secret"].as_str().unwrap().len() >= 43);
    assert!(m["intent_hash"].as_str().unwrap().starts_with("sha-256:"));
    // The anchors are the wire crate's envelope hashes over what was submitted, with iss = issuer.
    let expected_authority =
        missiongate_wire::digest::envelope_hash("mission-authority-set", ISS, &m["authorization_details"]);
    assert_eq!(m["authority_hash"], expected_authority.as_str());
    let expected_intent = missiongate_wire::digest::envelope_hash("mission-intent", ISS, &m["intent"]);
    assert_eq!(m["intent_hash"], expected_intent.as_str());

    // No token while pending.
    let (status, err) = p.token(&m, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");
    assert_eq!(err["mission_error"], "mission_inactive");

    let (status, approved) = p.op_post(&format!("/operator/missions/{}/approve", id(&m))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(approved["state"], "active");
    assert_eq!(approved["version"], 2);

    let (status, tok) = p.token(&m, None).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["mission_id"], id(&m));
    let jwks = p.jwks().await;
    let token = tok["access_token"].as_str().unwrap();
    let (header, payload) = verify(token, &jwks);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let claims: AccessTokenClaims = serde_json::from_value(payload.clone()).unwrap();
    assert_eq!(claims.iss, ISS);
    assert_eq!(claims.sub.as_deref(), Some("agent-7"));
    assert_eq!(claims.client_id.as_deref(), Some("agent-7"));
    assert_eq!(payload["aud"], json!(["https://erp.example.com", "https://api.partner.example"]));
    let (iat, exp) = (claims.iat.unwrap().0, claims.exp.unwrap().0);
    assert!((iat - now()).abs() <= 5);
    assert_eq!(exp - iat, 120);
    assert_eq!(tok["expires_in"], 120);
    assert!(claims.jti.as_deref().is_some_and(|j| j.len() >= 16));
    let mission = claims.mission.unwrap();
    assert_eq!(mission.id, id(&m));
    assert_eq!(mission.issuer.as_deref(), Some(ISS));
    assert_eq!(mission.authority_hash.as_deref(), m["authority_hash"].as_str());
    assert_eq!(Value::Array(claims.authorization_details), m["authorization_details"]);
    assert!(claims.cnf.is_none());
    // jti is fresh per token.
    let (_, tok2) = p.token(&m, None).await;
    let (_, payload2) = verify(tok2["access_token"].as_str().unwrap(), &jwks);
    assert_ne!(payload2["jti"], payload["jti"]);

    // Client authentication: wrong secret, wrong client, unknown mission are all invalid_client.
    let mut bad = m.clone();
    bad["client_secret"] = json!("mgcs_wrong");
    assert_eq!(p.token(&bad, None).await.0, StatusCode::UNAUTHORIZED);
    let mut bad = m.clone();
    bad["client_id"] = json!("agent-8");
    let (status, err) = p.token(&bad, None).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    let mut bad = m.clone();
    bad["id"] = json!("msn_unknown");
    assert_eq!(p.token(&bad, None).await.0, StatusCode::UNAUTHORIZED);
    // Basic client authentication works too.
    let resp = p
        .http
        .post(p.url("/token"))
        .basic_auth("agent-7", m["client_secret"].as_str())
        .form(&[("grant_type", "client_credentials"), ("mission_id", id(&m))])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Other grant types are refused.
    let resp = p.http.post(p.url("/token")).form(&[("grant_type", "password")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn lifecycle_transitions_versions_conflicts_and_audit() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.create_active(3600).await;
    let path = |a: &str| format!("/operator/missions/{}/{a}", id(&m));

    // Illegal from active: approve, reject, resume.
    for a in ["approve", "reject", "resume"] {
        let (status, err) = p.op_post(&path(a)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{a}");
        assert_eq!(err["error"], "conflict");
        assert_eq!(err["status"], 409);
        assert_eq!(err["mission"]["state"], "active");
    }

    let (status, s) = p.op_post(&path("suspend")).await;
    assert_eq!((status, s["state"].as_str(), s["version"].as_u64()), (StatusCode::OK, Some("suspended"), Some(3)));
    let (status, err) = p.token(&m, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (err["error"].as_str(), err["mission_error"].as_str()),
        (Some("invalid_grant"), Some("mission_inactive"))
    );
    assert_eq!(p.op_post(&path("suspend")).await.0, StatusCode::CONFLICT);

    let (status, s) = p.op_post(&path("resume")).await;
    assert_eq!((status, s["state"].as_str(), s["version"].as_u64()), (StatusCode::OK, Some("active"), Some(4)));
    assert_eq!(p.token(&m, None).await.0, StatusCode::OK);

    let (status, s) = p.op_post(&path("revoke")).await;
    assert_eq!((status, s["state"].as_str(), s["version"].as_u64()), (StatusCode::OK, Some("revoked"), Some(5)));
    let (status, err) = p.token(&m, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["mission_error"], "mission_revoked");
    // Terminal absorbs everything; the version does not move.
    for a in ["approve", "reject", "suspend", "resume", "revoke", "complete"] {
        assert_eq!(p.op_post(&path(a)).await.0, StatusCode::CONFLICT, "{a}");
    }
    // The operator mint is gated the same way.
    let (status, err) = p.op_post(&path("token")).await;
    assert_eq!(
        (status, err["error"].as_str(), err["mission_error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"), Some("mission_revoked"))
    );

    let (status, shown) = p.op(reqwest::Method::GET, &format!("/operator/missions/{}", id(&m)), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["version"], 5);
    let trail: Vec<(Value, Value, u64, String)> = shown["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(parse_rfc3339(t["at"].as_str().unwrap()).is_some());
            (
                t["from"].clone(),
                t["to"].clone(),
                t["version"].as_u64().unwrap(),
                t["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let op = "operator".to_string();
    assert_eq!(
        trail,
        vec![
            (Value::Null, json!("pending_approval"), 1, op.clone()),
            (json!("pending_approval"), json!("active"), 2, op.clone()),
            (json!("active"), json!("suspended"), 3, op.clone()),
            (json!("suspended"), json!("active"), 4, op.clone()),
            (json!("active"), json!("revoked"), 5, op.clone()),
        ]
    );

    // complete (from suspended) and reject (from pending).
    let c = p.create_active(3600).await;
    assert_eq!(p.op_post(&format!("/operator/missions/{}/suspend", id(&c))).await.0, StatusCode::OK);
    let (status, s) = p.op_post(&format!("/operator/missions/{}/complete", id(&c))).await;
    assert_eq!((status, s["state"].as_str()), (StatusCode::OK, Some("completed")));
    assert_eq!(p.token(&c, None).await.1["mission_error"], "mission_inactive");
    let r = p.create(3600).await;
    assert_eq!(p.op_post(&format!("/operator/missions/{}/suspend", id(&r))).await.0, StatusCode::CONFLICT);
    let (status, s) = p.op_post(&format!("/operator/missions/{}/reject", id(&r))).await;
    assert_eq!((status, s["state"].as_str(), s["version"].as_u64()), (StatusCode::OK, Some("rejected"), Some(2)));
    assert_eq!(p.op_post(&format!("/operator/missions/{}/approve", id(&r))).await.0, StatusCode::CONFLICT);

    // Unknown mission.
    let (status, err) = p.op_post("/operator/missions/msn_nope/approve").await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    // List, filtered by state.
    let (status, list) = p.op(reqwest::Method::GET, "/operator/missions?state=revoked", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["missions"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id(&m)]);
    let (_, all) = p.op(reqwest::Method::GET, "/operator/missions", None).await;
    assert_eq!(all["missions"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn expiry_by_the_clock_is_an_event_and_absorbs() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.create_active(2).await;
    let pending = p.create(2).await;
    assert_eq!(p.token(&m, None).await.0, StatusCode::OK);
    let seq = last_seq(&p).await;
    let jwks = p.jwks().await;

    // No reads: only the background task can expire them. Long-poll for both expiry events.
    let started = Instant::now();
    let mut expired = std::collections::HashMap::new();
    let mut ack = seq;
    while expired.len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(8), "expiry events did not arrive");
        let r = p.poll(json!({"ack": [ack.to_string()], "returnImmediately": false})).await;
        for (jti, set) in &r.sets {
            ack = ack.max(jti.parse().unwrap());
            let (_, state, version, mid) = set_state(set.as_str().unwrap(), &jwks);
            assert_eq!(state, MissionState::Expired);
            expired.insert(mid, version);
        }
    }
    assert_eq!(expired.get(id(&m)), Some(&3));
    assert_eq!(expired.get(id(&pending)), Some(&2));

    let (_, shown) = p.op(reqwest::Method::GET, &format!("/operator/missions/{}", id(&m)), None).await;
    assert_eq!(shown["state"], "expired");
    let last = shown["transitions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["actor"].as_str(), last["to"].as_str()), (Some("system:clock"), Some("expired")));
    let (status, err) = p.token(&m, None).await;
    assert_eq!((status, err["mission_error"].as_str()), (StatusCode::BAD_REQUEST, Some("mission_expired")));
    assert_eq!(p.op_post(&format!("/operator/missions/{}/resume", id(&m))).await.0, StatusCode::CONFLICT);
    assert_eq!(p.op_post(&format!("/operator/missions/{}/approve", id(&pending))).await.0, StatusCode::CONFLICT);

    // An expires_at in the past is refused at creation.
    let body = json!({"intent": {"goal": "g", "resources": ["https://a.example"], "expires_at": "2020-01-01T00:00:00Z"},
                      "authorization_details": [{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"]}],
                      "client_id": "c"});
    let (status, err) = p.op(reqwest::Method::POST, "/operator/missions", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["detail"].as_str().unwrap().contains("expires_at"));
}

#[tokio::test]
async fn mission_status_is_a_signed_fresh_answer() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &["--status-fresh-seconds", "7"]).await;
    let m = p.create_active(3600).await;

    let resp = p.status(id(&m), "https://api.partner.example", "nonce-K9pV4nT2").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/mission-status-response+jwt");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let jws = resp.text().await.unwrap();
    let jwks = p.jwks().await;
    let (header, payload) = verify(&jws, &jwks);
    assert_eq!(header.typ.as_deref(), Some("mission-status-response+jwt"));
    let claims: MissionStatusClaims = serde_json::from_value(payload).unwrap();
    assert_eq!(claims.iss, ISS);
    assert!(claims.aud.contains("https://api.partner.example"));
    assert_eq!(claims.nonce, "nonce-K9pV4nT2");
    assert!((claims.iat.0 - now()).abs() <= 5);
    assert_eq!(claims.exp.0 - claims.iat.0, 60);
    let mm = &claims.mission;
    assert_eq!(mm.id, id(&m));
    assert_eq!(mm.issuer, ISS);
    assert_eq!(mm.state, MissionState::Active);
    assert_eq!(mm.version, 2);
    assert_eq!(mm.expires_at.as_deref(), m["expires_at"].as_str());
    assert_eq!(parse_rfc3339(&mm.fresh_until), Some(claims.iat.0 + 7));
    assert_eq!(mm.authority_hash.as_deref(), m["authority_hash"].as_str());

    // After a suspension the answer says so, with a higher version.
    p.op_post(&format!("/operator/missions/{}/suspend", id(&m))).await;
    let jws = p.status(id(&m), "https://erp.example.com", "n2").await.text().await.unwrap();
    let (_, payload) = verify(&jws, &jwks);
    assert_eq!(payload["mission"]["state"], "suspended");
    assert_eq!(payload["mission"]["version"], 3);
    assert_eq!(payload["aud"], "https://erp.example.com");

    // Unknown Mission: 404 not_found.
    let resp = p.status("msn_doesnotexist", "https://a.example", "n3").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "not_found");
    assert_eq!(err["nonce"], "n3");

    // Every parameter is required.
    for form in [
        vec![("audience", "a"), ("nonce", "n")],
        vec![("mission_id", id(&m)), ("nonce", "n")],
        vec![("mission_id", id(&m)), ("audience", "a")],
        vec![("mission_id", id(&m)), ("audience", ""), ("nonce", "n")],
    ] {
        let resp = p.gw.post(p.url("/mission/status")).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_request");
    }
    // A repeated parameter is refused.
    let resp =
        p.gw.post(p.url("/mission/status"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("mission_id={}&audience=a&nonce=n&nonce=m", id(&m)))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn event_feed_acks_are_cumulative_and_receivers_independent() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let a = p.create_active(3600).await; // events 1 (pending), 2 (active)
    let b = p.create(3600).await; // event 3
    p.op_post(&format!("/operator/missions/{}/revoke", id(&a))).await; // event 4
    let jwks = p.jwks().await;

    // Receiver 1, no ack: everything retained.
    let r = p.poll(json!({"returnImmediately": true})).await;
    let mut jtis: Vec<u64> = r.sets.keys().map(|k| k.parse().unwrap()).collect();
    jtis.sort();
    assert_eq!(jtis, vec![1, 2, 3, 4]);
    assert!(!r.more_available);
    let expected = [
        (1, id(&a), MissionState::PendingApproval, 1),
        (2, id(&a), MissionState::Active, 2),
        (3, id(&b), MissionState::PendingApproval, 1),
        (4, id(&a), MissionState::Revoked, 3),
    ];
    for (seq, mid, state, version) in expected {
        let (claims, s, v, m) = set_state(r.sets[&seq.to_string()].as_str().unwrap(), &jwks);
        assert_eq!(claims.jti, seq.to_string());
        assert_eq!(claims.iss, ISS);
        assert!(claims.events.contains_key(EVENT_MISSION_STATE));
        assert_eq!((m.as_str(), s, v), (mid, state, version));
    }

    // Cumulative ack: acking 2 (or 1 and 2) returns 3 and 4 only.
    for ack in [json!(["2"]), json!(["1", "2"]), json!(["2", "1"])] {
        let r = p.poll(json!({"ack": ack, "returnImmediately": true})).await;
        let mut got: Vec<&String> = r.sets.keys().collect();
        got.sort();
        assert_eq!(got, vec!["3", "4"]);
    }
    // maxEvents pages, with moreAvailable.
    let r = p.poll(json!({"maxEvents": 3, "returnImmediately": true})).await;
    assert_eq!(r.sets.len(), 3);
    assert!(r.more_available);
    let r = p.poll(json!({"ack": ["3"], "maxEvents": 3, "returnImmediately": true})).await;
    assert_eq!(r.sets.keys().collect::<Vec<_>>(), vec!["4"]);
    assert!(!r.more_available);
    // maxEvents 0 only acknowledges.
    let r = p.poll(json!({"ack": ["1"], "maxEvents": 0})).await;
    assert!(r.sets.is_empty() && r.more_available);

    // Receiver 1 acks everything; receiver 2 still sees everything.
    let r1 = p.poll(json!({"ack": ["4"], "returnImmediately": true})).await;
    assert!(r1.sets.is_empty() && !r1.more_available);
    let r2 = p.poll(json!({"returnImmediately": true})).await;
    assert_eq!(r2.sets.len(), 4);

    // Bad ack values are refused.
    let resp = p.gw.post(p.url("/mission/events")).json(&json!({"ack": ["abc"]})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn long_poll_wakes_within_milliseconds_of_a_revoke() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &["--longpoll-seconds", "2"]).await;
    let m = p.create_active(3600).await;
    let seq = last_seq(&p).await;

    // Nothing new: a long poll waits --longpoll-seconds, then answers empty.
    let t = Instant::now();
    let r = p.poll(json!({"ack": [seq.to_string()], "returnImmediately": false})).await;
    assert!(r.sets.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(1900) && t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // Two receivers long-poll (returnImmediately absent means long poll, RFC 8936).
    let body = json!({"ack": [seq.to_string()]});
    let (h1, h2) = {
        let (c1, c2) = (p.gw.clone(), p.gw.clone());
        let (u1, u2) = (p.url("/mission/events"), p.url("/mission/events"));
        let (b1, b2) = (body.clone(), body.clone());
        (
            tokio::spawn(async move {
                let r: PollResponse = c1.post(u1).json(&b1).send().await.unwrap().json().await.unwrap();
                (Instant::now(), r)
            }),
            tokio::spawn(async move {
                let r: PollResponse = c2.post(u2).json(&b2).send().await.unwrap().json().await.unwrap();
                (Instant::now(), r)
            }),
        )
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!h1.is_finished() && !h2.is_finished(), "long polls returned early");
    let revoked_at = Instant::now();
    let (status, _) = p.op_post(&format!("/operator/missions/{}/revoke", id(&m))).await;
    assert_eq!(status, StatusCode::OK);
    let jwks = p.jwks().await;
    for h in [h1, h2] {
        let (woke, r) = h.await.unwrap();
        let latency = woke.duration_since(revoked_at);
        assert!(latency < Duration::from_millis(500), "woke after {latency:?}");
        assert_eq!(r.sets.len(), 1);
        let (_, state, version, mid) = set_state(r.sets.values().next().unwrap().as_str().unwrap(), &jwks);
        assert_eq!((mid.as_str(), state, version), (id(&m), MissionState::Revoked, 3));
    }
}

#[tokio::test]
async fn key_rotation_keeps_the_previous_kid_published() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.create_active(3600).await;
    let (_, t1) = p.token(&m, None).await;
    let t1 = t1["access_token"].as_str().unwrap().to_string();
    let kid1 = Compact::split(&t1).unwrap().header().unwrap().kid.unwrap();
    assert_eq!(p.jwks().await.keys.len(), 1);

    let (status, rotated) = p.op_post("/operator/keys/rotate").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rotated["previous_kid"], kid1.as_str());
    let kid2 = rotated["kid"].as_str().unwrap().to_string();
    assert_ne!(kid1, kid2);

    let jwks = p.jwks().await;
    let kids: Vec<&str> = jwks.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, vec![kid2.as_str(), kid1.as_str()]);
    assert!(jwks.keys.iter().all(|k| k.d.is_none() && k.alg.as_deref() == Some("ES256")));
    verify(&t1, &jwks);
    let (_, t2) = p.token(&m, None).await;
    let (h2, _) = verify(t2["access_token"].as_str().unwrap(), &jwks);
    assert_eq!(h2.kid.as_deref(), Some(kid2.as_str()));
    // Status responses and SETs use the new key too.
    let jws = p.status(id(&m), "https://erp.example.com", "n").await.text().await.unwrap();
    assert_eq!(verify(&jws, &jwks).0.kid.as_deref(), Some(kid2.as_str()));
    p.op_post(&format!("/operator/missions/{}/suspend", id(&m))).await;
    let r = p.poll(json!({"ack": ["2"], "returnImmediately": true})).await;
    assert_eq!(verify(r.sets["3"].as_str().unwrap(), &jwks).0.kid.as_deref(), Some(kid2.as_str()));
    // The events signed before the rotation still verify.
    let r = p.poll(json!({"returnImmediately": true})).await;
    assert_eq!(verify(r.sets["1"].as_str().unwrap(), &jwks).0.kid.as_deref(), Some(kid1.as_str()));
}

#[tokio::test]
async fn dpop_bound_tokens_carry_cnf_jkt() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.create_active(3600).await;
    let key = SigningKey::generate_p256();
    let jkt = key.public_jwk(None).thumbprint().unwrap();

    let proof = dpop_proof(&key, "https://as.test/token", now(), "proof-1");
    let (status, tok) = p.token(&m, Some(&proof)).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "DPoP");
    let (_, payload) = verify(tok["access_token"].as_str().unwrap(), &p.jwks().await);
    assert_eq!(payload["cnf"]["jkt"], jkt.as_str());

    // Replay, wrong htu, stale iat, wrong typ: invalid_dpop_proof.
    let stale = dpop_proof(&key, "https://as.test/token", now() - 600, "proof-3");
    let other_htu = dpop_proof(&key, "https://as.test/other", now(), "proof-2");
    let wrong_typ = key.sign_compact(
        &json!({"alg": "ES256", "typ": "jwt", "jwk": key.public_jwk(None)}),
        &json!({"jti": "proof-4", "htm": "POST", "htu": "https://as.test/token", "iat": now()}),
    );
    for bad in [proof.as_str(), other_htu.as_str(), stale.as_str(), wrong_typ.as_str(), "garbage"] {
        let (status, err) = p.token(&m, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err["error"], "invalid_dpop_proof");
    }

    // The operator can mint a bound token for a known thumbprint.
    let (status, tok) = p
        .op(reqwest::Method::POST, &format!("/operator/missions/{}/token", id(&m)), Some(json!({"dpop_jkt": jkt})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tok["token_type"], "DPoP");
    let (_, payload) = verify(tok["access_token"].as_str().unwrap(), &p.jwks().await);
    assert_eq!(payload["cnf"]["jkt"], jkt.as_str());
    let (status, _) = p
        .op(reqwest::Method::POST, &format!("/operator/missions/{}/token", id(&m)), Some(json!({"dpop_jkt": "short"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Without a body: a Bearer token.
    let (status, tok) = p.op_post(&format!("/operator/missions/{}/token", id(&m))).await;
    assert_eq!((status, tok["token_type"].as_str()), (StatusCode::OK, Some("Bearer")));
}

#[tokio::test]
async fn operator_api_requires_the_operator_token() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.create_active(3600).await;
    let (_, tok) = p.token(&m, None).await;
    let access_token = tok["access_token"].as_str().unwrap();

    let attempts: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong-token".into()),
        Some(format!("Bearer {access_token}")),
        Some(format!("Basic {OP}")),
        Some(format!("Bearer {OP}x")),
        Some("Bearer".into()),
    ];
    for auth in attempts {
        for (method, path) in [
            (reqwest::Method::GET, "/operator/missions".to_string()),
            (reqwest::Method::POST, format!("/operator/missions/{}/revoke", id(&m))),
            (reqwest::Method::POST, "/operator/keys/rotate".to_string()),
        ] {
            let mut req = p.http.request(method, p.url(&path));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?} {path}");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            assert!(resp.headers().contains_key("www-authenticate"));
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["status"], 401);
            assert!(!body.to_string().contains(access_token));
        }
    }
    // The scheme is case-insensitive; the Mission is untouched by the refused calls.
    let resp = p
        .http
        .get(p.url(&format!("/operator/missions/{}", id(&m))))
        .header("authorization", format!("bearer {OP}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["state"], "active");
}

#[tokio::test]
async fn kill_9_then_restart_keeps_missions_keys_and_events() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let a = p.create_active(3600).await;
    let b = p.create(3600).await;
    p.op_post(&format!("/operator/missions/{}/suspend", id(&a))).await;
    let (_, t_before) = p.token(&b, None).await; // refused (pending), no effect
    assert_eq!(t_before["error"], "invalid_grant");
    p.op_post("/operator/keys/rotate").await;
    let jwks_before = serde_json::to_value(p.jwks().await).unwrap();
    let events_before = p.poll(json!({"returnImmediately": true})).await;
    assert_eq!(events_before.sets.len(), 4);
    let (_, a_before) = p.op(reqwest::Method::GET, &format!("/operator/missions/{}", id(&a)), None).await;
    p.kill9().await;

    let p = Portal::start(&db, &[]).await;
    assert_eq!(serde_json::to_value(p.jwks().await).unwrap(), jwks_before);
    let events_after = p.poll(json!({"returnImmediately": true})).await;
    assert_eq!(events_after.sets, events_before.sets);
    let (_, a_after) = p.op(reqwest::Method::GET, &format!("/operator/missions/{}", id(&a)), None).await;
    assert_eq!(a_after, a_before);
    assert_eq!(a_after["state"], "suspended");
    // The client secret survived (as a hash): the agent can get a token once resumed.
    p.op_post(&format!("/operator/missions/{}/resume", id(&a))).await;
    let (status, tok) = p.token(&a, None).await;
    assert_eq!(status, StatusCode::OK);
    let (h, _) = verify(tok["access_token"].as_str().unwrap(), &p.jwks().await);
    assert_eq!(h.kid.as_deref(), jwks_before["keys"][0]["kid"].as_str());
    // Sequence numbers continue.
    let r = p.poll(json!({"ack": ["4"], "returnImmediately": true})).await;
    assert_eq!(r.sets.keys().collect::<Vec<_>>(), vec!["5"]);
    p.kill9().await;

    // The database belongs to its issuer.
    let err = Portal::try_start(&db, "https://other.test", &[]).await.err().expect("refused");
    assert!(err.contains("exited"), "{err}");
}

#[tokio::test]
async fn malformed_requests_get_problem_json() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let post = |body: &'static str, ct: &'static str| {
        p.http.post(p.url("/operator/missions")).bearer_auth(OP).header("content-type", ct).body(body).send()
    };
    let cases: Vec<(&str, &str, StatusCode, &str)> = vec![
        ("{bad json", "application/json", StatusCode::BAD_REQUEST, "not JSON"),
        (r#"{"intent": 1, "intent": 2}"#, "application/json", StatusCode::BAD_REQUEST, "duplicate"),
        (r#"{"client_id": "c"}"#, "application/json", StatusCode::BAD_REQUEST, "missing field"),
        (
            r#"{"intent": {"goal": "g", "resources": [], "expires_at": "x"}, "authorization_details": [], "client_id": "c", "x": 1}"#,
            "application/json",
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            r#"{"intent": {"goal": "g", "resources": ["https://a.example"], "expires_at": "2099-01-01T00:00:00Z"},
             "authorization_details": [{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["bad action"]}],
             "client_id": "c"}"#,
            "application/json",
            StatusCode::BAD_REQUEST,
            "authorization_details[0]",
        ),
        ("{}", "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type"),
    ];
    for (body, ct, status, needle) in cases {
        let resp = post(body, ct).await.unwrap();
        assert_eq!(resp.status(), status, "{body}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["status"], status.as_u16());
        assert!(v["detail"].as_str().unwrap().contains(needle), "{needle}: {v}");
        assert!(v["type"].as_str().is_some() && v["title"].as_str().is_some());
    }
    // Over the body limit.
    let big = format!("{{\"goal\": \"{}\"}}", "x".repeat(1_100_000));
    let resp = p
        .http
        .post(p.url("/operator/missions"))
        .bearer_auth(OP)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    // Bad JSON on the event feed.
    let resp =
        p.gw.post(p.url("/mission/events")).header("content-type", "application/json").body("[").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    // Unknown path and wrong method.
    let resp = p.http.get(p.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = p.http.get(p.url("/token")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // The server is still fine.
    assert_eq!(p.http.get(p.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn sigterm_ends_long_polls_and_exits_cleanly() {
    let (_dir, db) = temp_db();
    let mut p = Portal::start(&db, &[]).await;
    let (c, u) = (p.gw.clone(), p.url("/mission/events"));
    let poll = tokio::spawn(async move { c.post(u).json(&json!({"ack": ["1000"]})).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let killed = std::process::Command::new("kill").args(["-TERM", &p.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(5), p.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(poll.await.unwrap().unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn cli_drives_a_running_authority() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let cli = |args: Vec<String>| {
        let url = p.url.clone();
        async move {
            let out = Command::new(BIN)
                .args(&args)
                .env("MISSIONGATE_URL", url)
                .env("MISSIONGATE_OPERATOR_TOKEN", OP)
                .output()
                .await
                .unwrap();
            (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (ok, out, err) = cli(s(&[
        "mission",
        "create",
        "--goal",
        "Pay invoices",
        "--resource",
        "https://api.partner.example/v1",
        "--action",
        "http.get",
        "--action",
        "http.post",
        "--prefix",
        "--expires-in",
        "600",
        "--client-id",
        "agent-9",
    ]))
    .await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["state"], "pending_approval");
    assert_eq!(created["authorization_details"][0]["resource_match"], "prefix");
    assert_eq!(created["authorization_details"][0]["actions"], json!(["http.get", "http.post"]));
    let mid = id(&created).to_string();

    // Refused while pending: non-zero exit with the problem on stderr.
    let (ok, _, err) = cli(s(&["mission", "token", &mid])).await;
    assert!(!ok && err.contains("invalid_grant"), "{err}");
    let (ok, out, _) = cli(s(&["mission", "approve", &mid])).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["state"], "active");
    let (ok, out, _) = cli(s(&["mission", "token", &mid])).await;
    assert!(ok);
    let token = out.trim();
    assert_eq!(token.split('.').count(), 3);
    verify(token, &p.jwks().await);
    let jkt = SigningKey::generate_p256().public_jwk(None).thumbprint().unwrap();
    let (ok, out, _) = cli(s(&["mission", "token", &mid, "--dpop-jkt", &jkt])).await;
    assert!(ok);
    assert_eq!(verify(out.trim(), &p.jwks().await).1["cnf"]["jkt"], jkt.as_str());
    let (ok, out, _) = cli(s(&["mission", "suspend", &mid])).await;
    assert!(ok && out.contains("suspended"));
    let (ok, out, _) = cli(s(&["mission", "show", &mid])).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["transitions"].as_array().unwrap().len(), 3);
    let (ok, out, _) = cli(s(&["mission", "list", "--state", "suspended"])).await;
    assert!(ok && out.contains(&mid));
    // Revoke from the command line: terminal, and no token is minted afterwards.
    let (ok, out, err) = cli(s(&["mission", "resume", &mid])).await;
    assert!(ok && out.contains("active"), "{err}");
    let (ok, out, err) = cli(s(&["mission", "revoke", &mid])).await;
    assert!(ok && out.contains("revoked"), "{err}");
    let (ok, _, err) = cli(s(&["mission", "token", &mid])).await;
    assert!(!ok && err.contains("invalid_grant"), "{err}");
    let (ok, _, err) = cli(s(&["mission", "resume", &mid])).await;
    assert!(!ok, "a revoked Mission was resumed: {err}");
    let (ok, out, _) = cli(s(&["keys", "rotate"])).await;
    assert!(ok);
    let rotated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p.jwks().await.keys[0].kid.as_deref(), rotated["kid"].as_str());
    // A wrong operator token fails.
    let out = Command::new(BIN)
        .args(["mission", "show", &mid, "--url", &p.url, "--operator-token", "nope"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

//! Issue 2 end to end: the real Envoy with the built filter, a hyper upstream and a hyper stand-in
//! authority. Every request goes through Envoy's egress listener.

use missiongate_tests::authority::{Authority, Mode, Signer};
use missiongate_tests::envoy::{self, Envoy, Opts};
use missiongate_tests::http::{assert_denied, Req, Response};
use missiongate_tests::upstream::Upstream;
use missiongate_tests::world::WithAuthority;
use missiongate_tests::{now, rand_id};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod pki;

type World = WithAuthority;

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| WithAuthority::start(Opts { concurrency: 2, ..Opts::default() }))
}

fn get(path: &str, token: &str) -> Response {
    Req::new("GET", path).bearer(token).send(world().envoy.port)
}

fn invalid_token(r: &Response, reason: &str) {
    assert_denied(r, 401, reason);
    let www = r.header("www-authenticate").unwrap();
    assert!(www.starts_with("Bearer realm=\"missiongate\", error=\"invalid_token\""), "{www}");
}

fn compact(header: &Value, claims: &Value, sig: &[u8]) -> String {
    let b = |x: &[u8]| missiongate_wire::b64::encode(x);
    format!("{}.{}.{}", b(header.to_string().as_bytes()), b(claims.to_string().as_bytes()), b(sig))
}

#[test]
fn valid_token_reaches_the_upstream_with_evidence() {
    let w = world();
    let (mission, token) = w.auth.active_token();
    let before = w.up.hits();
    let r = get("/v1/invoices?status=open", &token);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upstream"], "echo");
    assert_eq!(r.json()["uri"], "/v1/invoices?status=open");
    assert!(w.up.hits() > before);
    // Hot path: the same token again.
    for _ in 0..5 {
        assert_eq!(get("/v1/invoices", &token).status, 200);
    }
    // One evidence record per decision in the access log, with the mission id.
    let start = Instant::now();
    loop {
        let logs = w.envoy.logs();
        if logs
            .lines()
            .any(|l| l.contains("evidence={") && l.contains(&mission) && l.contains("\"decision\":\"allow\""))
        {
            assert!(logs.contains("missiongate evidence {"));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no evidence for {mission} in\n{logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn no_credentials_is_401_with_challenge() {
    let r = Req::new("GET", "/v1/x").send(world().envoy.port);
    assert_denied(&r, 401, "no_credentials");
    let all = r.headers_all("www-authenticate");
    assert!(all.contains(&"Bearer realm=\"missiongate\""), "{all:?}");
    assert!(all.iter().any(|v| v.starts_with("DPoP algs=")), "{all:?}");
    // A token in the query string is never accepted.
    let (_, token) = world().auth.active_token();
    let r = Req::new("GET", &format!("/v1/x?access_token={token}")).send(world().envoy.port);
    assert_denied(&r, 401, "no_credentials");
    let r = Req::new("GET", "/v1/x").header("Authorization", "Basic dXNlcjpwYXNz").send(world().envoy.port);
    assert_denied(&r, 401, "no_credentials");
}

#[test]
fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let w = world();
    let (mission, _) = w.auth.active_token();
    let claims = w.auth.claims(&mission);
    let none = compact(&json!({"alg": "none", "typ": "at+jwt", "kid": "k1"}), &claims, b"");
    let none = format!("{}.", none.trim_end_matches('.'));
    invalid_token(&get("/v1/x", &none), "token_malformed");
    let none_sig = compact(&json!({"alg": "none", "typ": "at+jwt", "kid": "k1"}), &claims, b"x");
    invalid_token(&get("/v1/x", &none_sig), "alg_not_allowed");
    // HS256 "signed" with the issuer's public key bytes (algorithm confusion).
    let pubkey = w.auth.signer().public_sec1;
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(&pubkey)).unwrap();
    invalid_token(&get("/v1/x", &hs), "alg_not_allowed");
    let jwk_text = w.auth.signer().jwk.to_string();
    let hs = jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(jwk_text.as_bytes())).unwrap();
    invalid_token(&get("/v1/x", &hs), "alg_not_allowed");
}

#[test]
fn header_and_claim_checks() {
    let w = world();
    let (mission, _) = w.auth.active_token();
    let s = w.auth.signer();
    let base = w.auth.claims(&mission);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    invalid_token(&get("/v1/x", &s.sign("JWT", &base)), "wrong_typ");
    assert_eq!(get("/v1/x", &s.sign("application/at+jwt", &base)).status, 200);
    invalid_token(&get("/v1/x", &s.sign("at+jwt", &with(&|c| c["exp"] = json!(now() - 120)))), "token_expired");
    // within the 60 s skew an expired token still passes
    assert_eq!(get("/v1/x", &s.sign("at+jwt", &with(&|c| c["exp"] = json!(now() - 10)))).status, 200);
    invalid_token(&get("/v1/x", &s.sign("at+jwt", &with(&|c| c["nbf"] = json!(now() + 600)))), "token_not_yet_valid");
    invalid_token(&get("/v1/x", &s.sign("at+jwt", &with(&|c| c["iat"] = json!(now() + 600)))), "token_not_yet_valid");
    invalid_token(
        &get("/v1/x", &s.sign("at+jwt", &with(&|c| c["exp"] = json!(now() + 7200)))),
        "token_lifetime_exceeded",
    );
    invalid_token(
        &get("/v1/x", &s.sign("at+jwt", &with(&|c| c["iss"] = json!("https://evil.example")))),
        "unknown_issuer",
    );
    invalid_token(
        &get("/v1/x", &s.sign("at+jwt", &with(&|c| c["aud"] = json!("https://other.example")))),
        "wrong_audience",
    );
    invalid_token(
        &get(
            "/v1/x",
            &s.sign(
                "at+jwt",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("mission");
                }),
            ),
        ),
        "mission_claim_missing",
    );
    invalid_token(
        &get("/v1/x", &s.sign("at+jwt", &with(&|c| c["mission"]["issuer"] = json!("https://rogue.example")))),
        "untrusted_mission_issuer",
    );
    // `origin` is the older name of `issuer`; both present must agree.
    let issuer = w.auth.issuer.clone();
    assert_eq!(
        get(
            "/v1/x",
            &s.sign(
                "at+jwt",
                &with(&|c| {
                    c["mission"].as_object_mut().unwrap().remove("issuer");
                    c["mission"]["origin"] = json!(issuer.clone());
                })
            )
        )
        .status,
        200
    );
    invalid_token(
        &get("/v1/x", &s.sign("at+jwt", &with(&|c| c["mission"]["origin"] = json!("https://rogue.example")))),
        "mission_claim_missing",
    );
    invalid_token(
        &get(
            "/v1/x",
            &s.sign(
                "at+jwt",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        "token_malformed",
    );
    invalid_token(
        &get("/v1/x", &s.sign("at+jwt", &with(&|c| c["cnf"] = json!({"x5t#S256": "abc"})))),
        "unsupported_confirmation",
    );
    // A token from an unknown key, signed correctly: refused after one refetch.
    invalid_token(&get("/v1/x", &Signer::new("nope").sign("at+jwt", &base)), "unknown_key");
    // A key the issuer publishes under k1 but a different private key: bad signature.
    invalid_token(&get("/v1/x", &Signer::new("k1").sign("at+jwt", &base)), "bad_signature");
}

#[test]
fn tampered_payload_and_malformed_tokens() {
    let w = world();
    let (mission, token) = w.auth.active_token();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = w.auth.claims(&mission);
    claims["authorization_details"][0]["resource"] = json!("https://api.partner.example/");
    parts[1] = missiongate_wire::b64::encode(claims.to_string());
    invalid_token(&get("/v1/x", &parts.join(".")), "bad_signature");
    invalid_token(&get("/v1/x", "not-a-jwt"), "token_malformed");
    invalid_token(&get("/v1/x", "a.b.c"), "token_malformed");
    invalid_token(&get("/v1/x", "e30.e30.e30"), "token_malformed");
    let no_typ = format!("{}.e30.e30", missiongate_wire::b64::encode(r#"{"alg":"ES256"}"#));
    invalid_token(&get("/v1/x", &no_typ), "wrong_typ");
    // Hostile JSON inside a validly encoded segment.
    let deep = "[".repeat(5000);
    let hostile = format!(
        "{}.{}.{}",
        missiongate_wire::b64::encode(r#"{"alg":"ES256","typ":"at+jwt"}"#),
        missiongate_wire::b64::encode(deep),
        "AA"
    );
    invalid_token(&get("/v1/x", &hostile), "token_malformed");
}

#[test]
fn two_authorization_headers_and_a_64k_token() {
    let w = world();
    let (_, token) = w.auth.active_token();
    let r = Req::new("GET", "/v1/x").bearer(&token).bearer(&token).send(w.envoy.port);
    assert_denied(&r, 400, "malformed_request");
    assert!(r.header("www-authenticate").unwrap().contains("error=\"invalid_request\""));
    let huge = format!("{}.{}.{}", "a".repeat(32 * 1024), "b".repeat(32 * 1024), "c");
    invalid_token(&get("/v1/x", &huge), "token_too_large");
}

#[test]
fn mission_states_other_than_active_are_refused() {
    let w = world();
    for state in ["suspended", "revoked", "expired", "pending_approval", "completed", "paused_by_martians", "Active"] {
        let id = rand_id("msn_");
        w.auth.set_mission(&id, state);
        let r = get("/v1/x", &w.auth.token(&w.auth.claims(&id)));
        invalid_token(&r, "mission_inactive");
        assert_eq!(r.json()["mission"]["id"], id);
        assert_eq!(r.json()["mission"]["state"], state);
    }
    let id = rand_id("msn_");
    let r = get("/v1/x", &w.auth.token(&w.auth.claims(&id)));
    invalid_token(&r, "mission_unknown");
    assert_eq!(r.json()["mission"]["state"], "unknown");
}

#[test]
fn authority_set_matching() {
    let w = world();
    let (mission, token) = w.auth.active_token();
    assert_eq!(get("/v1", &token).status, 200);
    assert_eq!(get("/v1/deep/path", &token).status, 200);
    let r = get("/v1x", &token);
    assert_denied(&r, 403, "insufficient_authority");
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.contains("error=\"insufficient_scope\"") && www.contains("mission_denial=\"insufficient_authority\""),
        "{www}"
    );
    assert_denied(&get("/v2/x", &token), 403, "insufficient_authority");
    assert_denied(&get("/v1/%2e%2e/admin", &token), 403, "insufficient_authority");
    assert_denied(&Req::new("DELETE", "/v1/x").bearer(&token).send(w.envoy.port), 403, "insufficient_authority");
    // Named operation: POST /v1/payments is payments.create, which the set grants.
    let r = Req::new("POST", "/v1/payments")
        .bearer(&token)
        .header("content-type", "application/json")
        .body("{}")
        .send(w.envoy.port);
    assert_eq!(r.status, 200, "{}", r.text());
    // A destination outside the set (another Host), with an audience that matches it.
    let mut c = w.auth.claims(&mission);
    c["aud"] = json!(["https://api.partner.example", "http://elsewhere.example"]);
    let t = w.auth.token(&c);
    let r = Req::new("GET", "/v1/x").header("Host", "elsewhere.example").bearer(&t).send(w.envoy.port);
    assert_denied(&r, 403, "insufficient_authority");
    // An entry with a constraint the gateway cannot enforce fails closed.
    let mut c = w.auth.claims(&mission);
    c["authorization_details"] = json!([{ "type": "mission_resource_access", "resource": "https://api.partner.example/v1",
        "resource_match": "prefix", "actions": ["http.get"], "constraints": {"max_amount": {"amount": "1.00", "currency": "USD"}} }]);
    let r = get("/v1/x", &w.auth.token(&c));
    assert_denied(&r, 403, "constraint_unrecognized");
    assert!(r.header("www-authenticate").unwrap().contains("mission_denial=\"constraint_unrecognized\""));
    // Unknown entry type and unknown resource_match are not honoured.
    c["authorization_details"] = json!([
        { "type": "something_else", "resource": "https://api.partner.example/v1", "actions": ["http.get"] },
        { "type": "mission_resource_access", "resource": "https://api.partner.example/v1", "resource_match": "glob", "actions": ["http.*"] }]);
    assert_denied(&get("/v1", &w.auth.token(&c)), 403, "insufficient_authority");
    // http.* grants every method on the resource.
    c["authorization_details"] =
        json!([{ "type": "resource_access", "resource": "https://api.partner.example/v1", "actions": ["http.*"] }]);
    let t = w.auth.token(&c);
    assert_eq!(Req::new("DELETE", "/v1").bearer(&t).send(w.envoy.port).status, 200);
}

#[test]
fn counters_are_exported_with_bounded_names() {
    let w = world();
    let (_, token) = w.auth.active_token();
    let hits = w.envoy.counter("wasmcustom.missiongate.token_cache.hit");
    assert_eq!(get("/v1/a", &token).status, 200);
    // The same token again, on one connection after another: cache hits (per worker, so up to two
    // misses before both workers have it).
    for _ in 0..4 {
        assert_eq!(get("/v1/a", &token).status, 200);
    }
    assert_eq!(Req::new("GET", "/v1/a").send(w.envoy.port).status, 401);
    assert!(w.envoy.wait_counter("wasmcustom.missiongate.decision.allowed", 1) >= 1);
    assert!(w.envoy.wait_counter("wasmcustom.missiongate.decision.no_credentials", 1) >= 1);
    assert!(
        w.envoy.wait_counter("wasmcustom.missiongate.token_cache.hit", hits + 3) >= hits + 3,
        "token cache hits not counted"
    );
    assert!(w.envoy.counter("wasmcustom.missiongate.token_cache.miss") >= 1);
    let stats = w.envoy.stats();
    for line in stats.lines().filter(|l| l.contains("missiongate.")) {
        assert!(!line.contains("msn_") && !line.contains("partner"), "unbounded label: {line}");
    }
}

/// The authority down, slow, and answering garbage: each is 503 with Retry-After, and recovery.
/// Then key rotation while Envoy runs. Own Envoy and authority (it breaks them on purpose).
#[test]
fn authority_failures_and_key_rotation() {
    let up = Upstream::start(None);
    let auth = Authority::start();
    let mut envoy = Envoy::start(up.port, auth.port, Opts::default());
    let (_, token) = auth.active_token();
    assert_eq!(Req::new("GET", "/v1/a").bearer(&token).send(envoy.port).status, 200);

    let unavailable = |r: &Response| {
        assert_denied(r, 503, "authority_unavailable");
        assert!(r.header("retry-after").is_some());
    };
    // Each failure mode with a Mission the cache has not seen.
    for mode in ["closed", "503", "slow", "garbage"] {
        match mode {
            "closed" => auth.close(),
            "503" => auth.set_mode(Mode::Unavailable),
            "slow" => auth.set_mode(Mode::Slow(Duration::from_millis(2500))),
            _ => auth.set_mode(Mode::Garbage),
        }
        let (_, t) = auth.active_token();
        let started = Instant::now();
        let r = Req::new("GET", "/v1/a").bearer(&t).send(envoy.port);
        unavailable(&r);
        assert!(started.elapsed() < Duration::from_secs(4), "{mode}: took {:?}", started.elapsed());
        // back to normal: the same token now works (after the short failure backoff)
        if mode == "closed" {
            auth.open();
        }
        auth.set_mode(Mode::Normal);
        std::thread::sleep(Duration::from_millis(1100));
        let r = Req::new("GET", "/v1/a").bearer(&t).send(envoy.port);
        assert_eq!(r.status, 200, "{mode}: no recovery: {}", r.text());
    }

    // Key rotation: a token signed by a new kid is accepted after one refetch, without restart.
    let k2 = auth.rotate("k2");
    let id = rand_id("msn_");
    auth.set_mission(&id, "active");
    let r = Req::new("GET", "/v1/a").bearer(&k2.sign("at+jwt", &auth.claims(&id))).send(envoy.port);
    assert_eq!(r.status, 200, "{}", r.text());
    // Old-key tokens still verify (k1 is still published).
    assert_eq!(Req::new("GET", "/v1/b").bearer(&token).send(envoy.port).status, 200);
    assert!(envoy.alive());
}

#[test]
fn envoy_stays_healthy() {
    let w = world();
    // Drive a burst of mixed traffic, then check the VM never failed.
    let (_, token) = w.auth.active_token();
    for i in 0..50 {
        let t = if i % 3 == 0 { "garbage".to_owned() } else { token.clone() };
        let _ = get("/v1/x", &t);
    }
    // `world()`'s Envoy lives in a static and is never dropped (every other Envoy is checked when
    // its test drops it), so it is checked here.
    w.envoy.assert_healthy();
}

#[test]
fn every_shipped_envoy_config_validates() {
    let dir = missiongate_tests::repo_root().join("envoy");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let rel = format!("envoy/{}", p.file_name().unwrap().to_str().unwrap());
        // The mTLS example names certificate files: throwaway ones are made for it.
        let pki = rel.contains("mtls").then(pki::generate);
        let replace = pki.iter().map(|k| pki::replacement(&k.dir)).collect();
        let yaml = envoy::render(
            &rel,
            10000,
            9901,
            18080,
            18443,
            &Opts { events: true, pdp: true, replace, ..Opts::default() },
        );
        let (ok, out) = envoy::validate(&yaml);
        assert!(ok, "{rel} does not validate:\n{out}");
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn bad_filter_config_is_rejected_naming_the_field() {
    let yaml = envoy::render(
        "envoy/missiongate.yaml",
        10000,
        9901,
        18080,
        18443,
        &Opts {
            replace: vec![(
                "\"allowed_algs\": [\"ES256\", \"EdDSA\", \"RS256\", \"PS256\"]".into(),
                "\"allowed_algs\": [\"HS256\"]".into(),
            )],
            ..Opts::default()
        },
    );
    let (ok, out) = envoy::validate(&yaml);
    assert!(!ok, "a config with HS256 must not validate");
    assert!(out.contains("allowed_algs[0]"), "error does not name the field:\n{out}");
}

#[test]
fn connect_is_decided_on_the_target_and_tunnels_when_allowed() {
    use missiongate_tests::http::{connect, over};
    let w = world();
    let (mission, _) = w.auth.active_token();
    let mut c = w.auth.claims(&mission);
    c["authorization_details"] = json!([{ "type": "mission_resource_access", "resource": "https://api.partner.example", "actions": ["http.connect"] }]);
    let t = w.auth.token(&c);
    let auth = format!("Bearer {t}");
    let (r, tunnel) = connect(w.envoy.port, "api.partner.example:443", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = over(
        tunnel.unwrap(),
        "GET /through/the/tunnel HTTP/1.1\r\nHost: api.partner.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["uri"], "/through/the/tunnel");
    // No grant for the CONNECT target: refused on the CONNECT itself.
    let (_, other) = w.auth.active_token();
    let auth = format!("Bearer {other}");
    let (r, tunnel) = connect(w.envoy.port, "api.partner.example:443", &[("Authorization", &auth)]);
    assert!(tunnel.is_none(), "{:?} {}", r.headers, r.text());
    assert_denied(&r, 403, "insufficient_authority");
    let (r, _) = connect(w.envoy.port, "api.partner.example:443", &[]);
    assert_denied(&r, 401, "no_credentials");
}

/// A body arriving while the filter still waits for Mission Status must not push the request through.
#[test]
fn body_data_does_not_bypass_a_pending_decision() {
    let w = world();
    let id = rand_id("msn_");
    w.auth.set_mission(&id, "revoked");
    let mut c = w.auth.claims(&id);
    c["authorization_details"] = json!([{ "type": "mission_resource_access", "resource": "https://api.partner.example/v1", "resource_match": "prefix", "actions": ["http.*"] }]);
    let t = w.auth.token(&c);
    let chunks: Vec<Vec<u8>> = (0..20).map(|i| format!("chunk-{i};").into_bytes()).collect();
    let r = Req::new("POST", "/v1/upload")
        .bearer(&t)
        .header("content-type", "text/plain")
        .chunked(chunks)
        .send(w.envoy.port);
    invalid_token(&r, "mission_inactive");
    assert_eq!(w.up.seen("/v1/upload"), 0, "the upstream saw a request from a revoked mission");
}

#[test]
fn keys_from_a_file_served_by_envoy() {
    // envoy/missiongate-static-keys.yaml: Envoy serves a JWKS file to the filter. The stand-in
    // authority answers Mission Status only; its own JWKS endpoint must never be asked.
    let up = Upstream::start(None);
    let auth = Authority::start();
    let file = missiongate_tests::repo_root().join("target/e2e").join(format!("{}.jwks.json", rand_id("keys-")));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, json!({ "keys": [auth.signer().jwk] }).to_string()).unwrap();
    let (port, admin, keys_port) =
        (missiongate_tests::free_port(), missiongate_tests::free_port(), missiongate_tests::free_port());
    let yaml = envoy::render(
        "envoy/missiongate-static-keys.yaml",
        port,
        admin,
        up.port,
        auth.port,
        &Opts {
            replace: vec![
                (
                    format!("filename: {}/envoy/static-keys.jwks.json", missiongate_tests::repo_root().display()),
                    format!("filename: {}", file.display()),
                ),
                ("port_value: 18444".into(), format!("port_value: {keys_port}")),
            ],
            ..Opts::default()
        },
    );
    let e = Envoy::start_yaml(&yaml, port, admin, 1);
    let (_, token) = auth.active_token();
    let r = Req::new("GET", "/v1/from-file").bearer(&token).send(e.port);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(auth.jwks_hits(), 0, "the keys must come from the file");
    // A key that is not in the file is refused, after the (rate-limited) refetch of the file.
    let other = Signer::new("not-in-the-file");
    let r = Req::new("GET", "/v1/from-file").bearer(&other.sign("at+jwt", &auth.claims(&rand_id("msn_")))).send(e.port);
    invalid_token(&r, "unknown_key");
    assert!(
        e.counter("wasmcustom.missiongate.callout.jwks.ok") >= 1
            || e.wait_counter("wasmcustom.missiongate.callout.jwks.ok", 1) >= 1
    );
}

#[test]
fn no_keys_loaded_is_503_at_once_and_recovers_when_the_jwks_is_back() {
    // Envoy starts while the authority is down: the JWKS cannot be loaded. Requests are refused
    // promptly (never queued forever), and served once the keys arrive, without a restart.
    let up = Upstream::start(None);
    let auth = Authority::start();
    auth.close();
    let e = Envoy::start(up.port, auth.port, Opts::default());
    let (_, token) = auth.active_token();
    for _ in 0..3 {
        let started = Instant::now();
        let r = Req::new("GET", "/v1/no-keys").bearer(&token).send(e.port);
        assert_denied(&r, 503, "keys_unavailable");
        assert!(r.header("retry-after").is_some());
        assert!(r.header("www-authenticate").is_none(), "not the token's fault");
        assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    }
    assert_eq!(up.seen("/v1/no-keys"), 0);
    // A JWKS that answers garbage is no better.
    auth.open();
    auth.set_mode(Mode::Garbage);
    std::thread::sleep(Duration::from_millis(1100));
    assert_denied(&Req::new("GET", "/v1/no-keys").bearer(&token).send(e.port), 503, "keys_unavailable");
    // Back: within the refetch pace (1 s), the keys load and the same token goes through.
    auth.set_mode(Mode::Normal);
    let start = Instant::now();
    loop {
        let r = Req::new("GET", "/v1/no-keys").bearer(&token).send(e.port);
        if r.status == 200 {
            break;
        }
        assert_denied(&r, 503, "keys_unavailable");
        assert!(start.elapsed() < Duration::from_secs(5), "keys never loaded");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        e.counter("wasmcustom.missiongate.callout.jwks.failed") >= 1
            || e.wait_counter("wasmcustom.missiongate.callout.jwks.failed", 1) >= 1
    );
}

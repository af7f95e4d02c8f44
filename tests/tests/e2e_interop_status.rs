//! Issue 18 end to end, through the real Envoy with the built filter and the stand-in authority
//! speaking the drafts: `mission.lifecycle-change` SETs (draft-mcguinness-oauth-mission-signals)
//! with duplicates, reordering, a version gap and a SET for another audience; containment through
//! the Status answer's `authorization_details` after `authority_changed`; Mission Status errors (a
//! bare 404 against the draft's not-found); the Status credential in a configured header.

use missiongate_tests::authority::{Authority, Mode};
use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::{assert_denied, Req, Response};
use missiongate_tests::upstream::Upstream;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod pki;

const COUNTER: &str = "wasmcustom.missiongate.";

fn start(opts: Opts) -> (Upstream, Authority, Envoy) {
    let up = Upstream::start(None);
    let auth = Authority::start();
    let envoy = Envoy::start(up.port, auth.port, opts);
    (up, auth, envoy)
}

fn get(envoy: &Envoy, path: &str, token: &str) -> Response {
    Req::new("GET", path).bearer(token).send(envoy.port)
}

fn pay(envoy: &Envoy, token: &str) -> Response {
    Req::new("POST", "/v1/payments").bearer(token).body(b"{}".to_vec()).send(envoy.port)
}

/// Wait (bounded) until `f` holds.
fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn until_status(envoy: &Envoy, token: &str, status: u16) -> Response {
    let start = Instant::now();
    loop {
        let r = get(envoy, "/v1/invoices", token);
        if r.status == status {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "still {} (wanted {status}): {}", r.status, r.text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn draft_shaped_sets_duplicates_reordering_a_gap_and_another_audience() {
    let (_up, auth, envoy) = start(Opts { events: true, ..Opts::default() });
    let (id, token) = auth.active_token(); // active, version 1; Status answers stay fresh 30 s
    assert_eq!(get(&envoy, "/v1/invoices", &token).status, 200);

    // A SET for another gateway's audience is refused (reported in setErrs) and changes nothing.
    let foreign = auth.publish_event_with(&id, "revoked", 2, &json!({"aud": "https://other-gateway.example"}));
    eventually("the foreign SET reported", Duration::from_secs(3), || {
        auth.set_errs().iter().any(|(j, e)| *j == foreign && e == "invalid_audience")
    });
    assert!(!auth.acks().contains(&foreign), "a refused SET is not acknowledged as processed");
    assert_eq!(get(&envoy, "/v1/invoices", &token).status, 200);

    // v2 (suspended) is lost on the way; v3 arrives first (a gap). Meanwhile the authority moved on
    // to v4 (suspended). The cached answer (active v1, fresh for 30 s more) is not relied on: Mission
    // Status is asked, and says suspended.
    auth.set_mission_version(&id, "suspended", 4);
    let hits = auth.status_hits();
    let v3 = auth.publish_event_with(&id, "active", 3, &json!({"prior_state": "suspended"}));
    let r = until_status(&envoy, &token, 401);
    assert_denied(&r, 401, "mission_inactive");
    assert_eq!(r.json()["mission"]["state"], "suspended");
    assert!(auth.status_hits() > hits, "the gap was settled by Mission Status");
    assert!(auth.acks().contains(&v3), "each SET is acknowledged by its jti");

    // The late v2 (reordered) is ignored: never a regression, and it is acknowledged.
    let v2 = auth.publish_event(&id, "suspended", 2);
    eventually("v2 acknowledged", Duration::from_secs(3), || auth.acks().contains(&v2));
    // Resume (v5): applied at once, no Status fetch needed (no gap after v4).
    auth.set_mission_version(&id, "active", 5);
    let v5 = auth.publish_event(&id, "active", 5);
    until_status(&envoy, &token, 200);
    eventually("v5 acknowledged", Duration::from_secs(3), || auth.acks().contains(&v5));

    // Everything delivered again (duplicates of every jti): nothing changes. Counters are flushed
    // on the filter's tick: let the ones so far settle first.
    std::thread::sleep(Duration::from_secs(2));
    let applied = envoy.counter(&format!("{COUNTER}events.applied"));
    let acked_v5 = auth.acks().iter().filter(|j| **j == v5).count();
    auth.redeliver_all();
    eventually("v5 acknowledged again", Duration::from_secs(3), || {
        auth.acks().iter().filter(|j| **j == v5).count() > acked_v5
    });
    for _ in 0..20 {
        assert_eq!(get(&envoy, "/v1/invoices", &token).status, 200);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(envoy.counter(&format!("{COUNTER}events.applied")), applied, "a duplicate was applied");
    assert!(envoy.counter(&format!("{COUNTER}events.rejected")) >= 2, "the foreign SET, twice");

    // A revocation still bites at once.
    auth.set_mission_version(&id, "revoked", 6);
    auth.publish_event(&id, "revoked", 6);
    let r = until_status(&envoy, &token, 401);
    assert_eq!(r.json()["mission"]["state"], "revoked");
}

#[test]
fn authority_changed_narrows_the_mission_at_the_edge() {
    let (_up, auth, envoy) = start(Opts { events: true, ..Opts::default() });
    let (id, token) = auth.active_token();
    // The token grants both: reads under /v1 and payments.create on /v1/payments.
    assert_eq!(get(&envoy, "/v1/invoices", &token).status, 200);
    assert_eq!(pay(&envoy, &token).status, 200);
    // The issuer contains the Mission: state stays active, its Authority Set loses payments.
    auth.set_current_authority(
        &id,
        Some(json!([{"type": "mission_resource_access", "resource": "https://api.partner.example/v1",
                     "resource_match": "prefix", "actions": ["http.get", "invoices.*"]}])),
    );
    auth.set_mission_version(&id, "active", 2);
    auth.publish_event_with(&id, "active", 2, &json!({"prior_state": "active", "authority_changed": true}));
    let start = Instant::now();
    loop {
        let r = pay(&envoy, &token);
        if r.status == 403 {
            assert_denied(&r, 403, "insufficient_authority");
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(start.elapsed() < Duration::from_secs(3), "containment did not bite");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("containment took effect in {:?}", start.elapsed());
    // The other destination the token names stays allowed.
    assert_eq!(get(&envoy, "/v1/invoices", &token).status, 200);
    for _ in 0..10 {
        assert_eq!(pay(&envoy, &token).status, 403);
    }
}

#[test]
fn a_bare_404_is_a_logged_503_and_the_drafts_not_found_is_mission_unknown() {
    let (_up, auth, envoy) = start(Opts::default());
    // The draft's not-found body (error, error_description, echoed nonce): unknown Mission.
    let unknown = missiongate_tests::rand_id("msn_");
    let t = auth.token(&auth.claims(&unknown));
    let r = get(&envoy, "/v1/invoices", &t);
    assert_denied(&r, 401, "mission_unknown");
    assert_eq!(r.json()["mission"]["state"], "unknown");
    // A bare 404 (what a wrong endpoint path answers): a failure of the authority.
    auth.set_mode(Mode::Bare404);
    let (_, t2) = auth.active_token();
    let r = get(&envoy, "/v1/invoices", &t2);
    assert_denied(&r, 503, "authority_unavailable");
    assert!(r.header("retry-after").is_some());
    eventually("the cause logged", Duration::from_secs(3), || {
        envoy.logs().contains("status endpoint answered 404 without the draft's error body")
    });
    assert!(envoy.wait_counter(&format!("{COUNTER}callout.status.unexpected"), 1) >= 1);
    // Logged at a bounded rate: many more failures within the interval add no line.
    for _ in 0..5 {
        let (_, t) = auth.active_token();
        assert_eq!(get(&envoy, "/v1/invoices", &t).status, 503);
    }
    let lines = envoy.logs().matches("Mission Status of").count();
    assert_eq!(lines, 1, "{}", envoy.logs());
    assert!(envoy.wait_counter(&format!("{COUNTER}callout.status.unexpected"), 6) >= 6);
    auth.set_mode(Mode::Normal);
    let (_, t3) = auth.active_token();
    assert_eq!(get(&envoy, "/v1/invoices", &t3).status, 200);
}

#[test]
fn the_status_credential_travels_in_the_configured_header() {
    let replace = vec![(
        "\"credential\": \"Bearer missiongate-dev-gateway-credential-change-me\"".to_owned(),
        "\"credential\": \"sc-token-7\", \"credential_header\": \"x-mission-status-auth\"".to_owned(),
    )];
    let (_up, auth, envoy) = start(Opts { replace, ..Opts::default() });
    auth.require_status_header("x-mission-status-auth", "sc-token-7");
    let (_, t) = auth.active_token();
    assert_eq!(get(&envoy, "/v1/invoices", &t).status, 200);
    // The authority refusing the credential (401 with the draft's body) is a logged 503.
    auth.require_status_header("x-mission-status-auth", "another");
    let (_, t2) = auth.active_token();
    assert_denied(&get(&envoy, "/v1/invoices", &t2), 503, "authority_unavailable");
    eventually("the cause logged", Duration::from_secs(3), || envoy.logs().contains("answered HTTP 401"));
}

/// The ring provider (the one built here; post-quantum key exchange does not matter on loopback).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serve the stand-in authority's routes over TLS on `port`, requiring a client certificate issued
/// by the test CA. Returns the number of connections served with a verified client certificate.
fn serve_mtls(auth: &Authority, pki: &pki::Pki, port: u16) -> Arc<AtomicUsize> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(pki.server_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key_der.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let router = auth.router();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    let rt = missiongate_tests::rt();
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))).unwrap();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                // A client without a certificate from the CA fails here.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                if tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    served
}

#[test]
fn mission_status_over_mtls_through_the_envoy_cluster() {
    let pki = pki::generate();
    let up = Upstream::start(None);
    // The stand-in's plain listener is not used by Envoy here: it dials the TLS one.
    let auth = Authority::start();
    let tls_port = missiongate_tests::free_port();
    let served = serve_mtls(&auth, &pki, tls_port);
    let (listener, admin) = (missiongate_tests::free_port(), missiongate_tests::free_port());
    let opts = Opts { replace: vec![pki::replacement(&pki.dir)], ..Opts::default() };
    let yaml = missiongate_tests::envoy::render(
        "envoy/missiongate-mtls-status.yaml",
        listener,
        admin,
        up.port,
        tls_port,
        &opts,
    );
    // The cluster dials the TLS port; the issuer is the string the stand-in signs with.
    let yaml = yaml
        .replace(&format!("\"issuer\": \"http://127.0.0.1:{tls_port}\""), &format!("\"issuer\": \"{}\"", auth.issuer));
    let envoy = Envoy::start_yaml(&yaml, listener, admin, 1);
    let (_, token) = auth.active_token();
    let r = get(&envoy, "/v1/invoices", &token);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.logs());
    assert!(served.load(Ordering::SeqCst) >= 1, "no connection presented the gateway's client certificate");
    // The stand-in refuses a TLS client without a certificate.
    let refused = missiongate_tests::rt().block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(pki.ca_der.clone())).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("authority.missiongate.test").unwrap();
        match tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await {
            Err(_) => true,
            Ok(mut tls) => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = tls.write_all(b"GET /jwks.json HTTP/1.1\r\nHost: a\r\n\r\n").await;
                let mut buf = [0u8; 64];
                !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
            }
        }
    });
    assert!(refused, "the authority must require a client certificate");
    let _ = std::fs::remove_dir_all(&pki.dir);
}

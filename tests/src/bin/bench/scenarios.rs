//! What is measured: one scenario per (request shape, listener), each with its counterpart.

use missiongate_tests::authority::Authority;
use missiongate_tests::now;
use serde_json::{json, Value};

pub const HOST: &str = "api.partner.example";
pub const ORIGIN: &str = "https://api.partner.example";
pub const GET_PATH: &str = "/v1/invoices";
pub const POST_PATH: &str = "/v1/payments";
pub const KIB: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// One token, always the same.
    Hot,
    /// A new token on every request, from the pre-minted pool.
    Pool,
    /// One DPoP-bound token with a new proof on every request, from the pre-minted proof pool.
    Dpop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A native figure others are compared with.
    Native,
    /// The cheapest Rust proxy-wasm filters (bench/reference-filter): the Wasm limit on this host.
    Reference,
    /// missiongate, with a target or a headline ratio.
    Main,
    /// missiongate, to explain the others.
    Diagnostic,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Native => "native",
            Role::Reference => "reference",
            Role::Main => "missiongate",
            Role::Diagnostic => "diagnostic",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub id: &'static str,
    pub title: &'static str,
    pub listener: &'static str,
    pub body: Option<usize>,
    pub tok: Tok,
    pub role: Role,
    /// The counterpart: ratios are figures of this scenario divided by that one's, round by round.
    pub baseline: Option<&'static str>,
    /// Further counterparts, reported alongside (req/s ratios only).
    pub also: &'static [&'static str],
}

impl Scenario {
    /// Its tokens (or proofs) come from the pool in order, never twice: the filter must see each one
    /// for the first time (a cold token) or would refuse it (a replayed proof).
    pub fn in_order(&self) -> bool {
        self.id == COLD || self.tok == Tok::Dpop
    }
}

/// The cold-path scenario.
pub const COLD: &str = "get_mg_cold";
/// The DPoP scenario.
pub const DPOP: &str = "get_mg_dpop";
/// The DPoP scenario on a VM forced to verify signatures in pure Rust (`MISSIONGATE_VERIFIER=pure`).
pub const DPOP_PURE: &str = "get_mg_dpop_pure";

pub fn scenarios() -> Vec<Scenario> {
    let s = |id, title, listener, body, tok, role, baseline, also| Scenario {
        id,
        title,
        listener,
        body,
        tok,
        role,
        baseline,
        also,
    };
    use Role::*;
    use Tok::*;
    vec![
        s("get_none", "GET, no filter", "none", None, Hot, Native, None, &[]),
        s("get_jwt_cache", "GET, jwt_authn + jwt_cache_config", "jwt_cache", None, Hot, Native, Some("get_none"), &[]),
        s(
            "get_jwt_nocache",
            "GET, jwt_authn, no cache, token pool",
            "jwt_nocache",
            None,
            Pool,
            Native,
            Some("get_none"),
            &[],
        ),
        s(
            "get_ref_empty",
            "GET, empty Rust proxy-wasm filter (the Wasm limit)",
            "ref_empty",
            None,
            Hot,
            Reference,
            Some("get_none"),
            &[],
        ),
        s(
            "get_ref_headers",
            "GET, Rust proxy-wasm filter reading the headers once",
            "ref_headers",
            None,
            Hot,
            Reference,
            Some("get_none"),
            &["get_ref_empty"],
        ),
        s(
            "get_mg_hot",
            "GET, missiongate hot path",
            "mg_hot",
            None,
            Hot,
            Main,
            Some("get_jwt_cache"),
            &["get_ref_empty", "get_ref_headers", "get_none"],
        ),
        s(
            "get_mg_cold",
            "GET, missiongate cold path (new token each request)",
            "mg_cold",
            None,
            Pool,
            Main,
            Some("get_jwt_nocache"),
            &["get_none"],
        ),
        s(
            "get_mg_nolog",
            "GET, missiongate hot path, evidence log off",
            "mg_nolog",
            None,
            Hot,
            Main,
            Some("get_jwt_cache"),
            &["get_ref_empty", "get_mg_hot"],
        ),
        s(
            DPOP,
            "GET, missiongate, DPoP-bound token, new proof each request",
            "mg_dpop",
            None,
            Dpop,
            Main,
            Some("get_jwt_nocache"),
            &["get_mg_hot"],
        ),
        // Right after mg_dpop, so that the two are measured seconds apart in every round: `also vs`
        // mg_dpop is the BoringSSL-vs-Rust ratio of the proofs' signature checks.
        s(
            DPOP_PURE,
            "GET, missiongate, DPoP, signatures in Rust (MISSIONGATE_VERIFIER=pure)",
            "mg_dpop_pure",
            None,
            Dpop,
            Diagnostic,
            Some("get_jwt_nocache"),
            &["get_mg_dpop"],
        ),
        s("post_1k_none", "POST 1 KiB, no filter", "none", Some(KIB), Hot, Native, None, &[]),
        s(
            "post_1k_buffer",
            "POST 1 KiB, Envoy buffer filter",
            "buffer",
            Some(KIB),
            Hot,
            Native,
            Some("post_1k_none"),
            &[],
        ),
        s(
            "post_1k_mg",
            "POST 1 KiB, missiongate (buffered, digested)",
            "mg_post",
            Some(KIB),
            Hot,
            Main,
            Some("post_1k_buffer"),
            &["post_1k_none"],
        ),
        s(
            "post_1k_mg_nopdp",
            "POST 1 KiB, missiongate, no PDP (not buffered)",
            "mg_post_nopdp",
            Some(KIB),
            Hot,
            Diagnostic,
            Some("post_1k_none"),
            &[],
        ),
        s("post_64k_none", "POST 64 KiB, no filter", "none", Some(64 * KIB), Hot, Native, None, &[]),
        s(
            "post_64k_buffer",
            "POST 64 KiB, Envoy buffer filter",
            "buffer",
            Some(64 * KIB),
            Hot,
            Native,
            Some("post_64k_none"),
            &[],
        ),
        s(
            "post_64k_mg",
            "POST 64 KiB, missiongate (buffered, digested)",
            "mg_post",
            Some(64 * KIB),
            Hot,
            Main,
            Some("post_64k_buffer"),
            &["post_64k_none"],
        ),
        s(
            "post_64k_mg_nopdp",
            "POST 64 KiB, missiongate, no PDP (not buffered)",
            "mg_post_nopdp",
            Some(64 * KIB),
            Hot,
            Diagnostic,
            Some("post_64k_none"),
            &[],
        ),
        s("post_1m_none", "POST 1 MiB, no filter", "none", Some(1024 * KIB), Hot, Native, None, &[]),
        s(
            "post_1m_buffer",
            "POST 1 MiB, Envoy buffer filter",
            "buffer",
            Some(1024 * KIB),
            Hot,
            Native,
            Some("post_1m_none"),
            &[],
        ),
        s(
            "post_1m_mg",
            "POST 1 MiB, missiongate (buffered, digested)",
            "mg_post",
            Some(1024 * KIB),
            Hot,
            Main,
            Some("post_1m_buffer"),
            &["post_1m_none"],
        ),
        s(
            "post_1m_mg_nopdp",
            "POST 1 MiB, missiongate, no PDP (not buffered)",
            "mg_post_nopdp",
            Some(1024 * KIB),
            Hot,
            Diagnostic,
            Some("post_1m_none"),
            &[],
        ),
    ]
}

/// Listeners without the Wasm filter (the "without the filter" Envoy keeps only these).
pub fn is_native(listener: &str) -> bool {
    !listener.starts_with("mg_") && !listener.starts_with("ref_")
}

/// missiongate listeners on a VM of their own rather than the shared `vm_id: missiongate`
/// (`mg_dpop_pure`: `MISSIONGATE_VERIFIER=pure` in its VM's environment). Memory and start time
/// are measured without them, so that they stay one filter's cost.
pub fn has_own_vm(listener: &str) -> bool {
    listener == "mg_dpop_pure"
}

// ------------------------------------------------------------------------------ inputs ------------

/// Claims for a bench token: the harness's defaults, valid for the whole run (lifetime under the
/// filter's 3600 s maximum).
pub fn claims(auth: &Authority, mission: &str) -> Value {
    let mut c = auth.claims(mission);
    let t = now();
    c["iat"] = json!(t);
    c["exp"] = json!(t + 3000);
    c
}

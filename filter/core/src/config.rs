//! Filter configuration: the JSON the operator writes (schema: `filter/config.schema.json`) and the
//! immutable runtime form it is validated into once, at `on_configure`.
//!
//! Every validation error names the field it is about (`issuers[0].jwks_uri.cluster: ...`).

use missiongate_wire::jose::{Alg, Jwk, JwkSet, VerifyingKey};
use serde::Deserialize;
use std::collections::HashMap;

use crate::config_error::err;
use crate::tables::within_table_budget;
use crate::uri;

pub use crate::config_error::ConfigError;
pub use crate::destinations::{
    is_consequential, valid_tool_name, ClientMessages, Destination, DestinationRef, McpServer, McpTool, Mode, Operation,
};

/// Longest JWKS document accepted by default (`jwks_max_bytes`).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most entries a JWKS may list by default (`jwks_max_keys`).
pub const MAX_JWKS_KEYS: usize = 32;

// ---------------------------------------------------------------- raw (as written) ---------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuers: Vec<RawIssuer>,
    #[serde(default)]
    allowed_algs: Option<Vec<String>>,
    #[serde(default)]
    clock_skew_seconds: Option<u64>,
    #[serde(default)]
    max_token_lifetime_seconds: Option<u64>,
    #[serde(default)]
    max_token_bytes: Option<usize>,
    #[serde(default)]
    token_cache_size: Option<usize>,
    #[serde(default)]
    destinations: Vec<RawDestination>,
    #[serde(default)]
    evidence: Option<RawEvidence>,
    #[serde(default)]
    dpop: Option<RawDpop>,
    #[serde(default)]
    realm: Option<String>,
    #[serde(default)]
    pdp: Option<RawPdp>,
    #[serde(default)]
    egress_allow: Vec<String>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPdp {
    evaluation: RawUpstream,
    #[serde(default)]
    retry_after_seconds: Option<u32>,
    #[serde(default)]
    deny_cache_seconds: Option<u64>,
    #[serde(default)]
    subject_type: Option<String>,
    #[serde(default)]
    credential: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    #[serde(default)]
    jwks: Option<serde_json::Value>,
    #[serde(default)]
    jwks_uri: Option<RawUpstream>,
    #[serde(default)]
    jwks_refresh_seconds: Option<u64>,
    #[serde(default)]
    jwks_min_refetch_seconds: Option<u64>,
    #[serde(default)]
    jwks_max_bytes: Option<usize>,
    #[serde(default)]
    jwks_max_keys: Option<usize>,
    #[serde(default = "yes")]
    access_tokens: bool,
    #[serde(default)]
    mission_authority: Option<RawMissionAuthority>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    path: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMissionAuthority {
    status: RawUpstream,
    #[serde(default)]
    events: Option<RawUpstream>,
    audience: String,
    #[serde(default)]
    max_staleness_seconds: Option<u64>,
    #[serde(default)]
    credential: Option<String>,
    #[serde(default)]
    credential_header: Option<String>,
    #[serde(default)]
    retry_after_seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    authority: String,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    operations: Vec<RawOperation>,
    #[serde(default)]
    consequential_methods: Option<Vec<String>>,
    #[serde(default)]
    effect_headers: Vec<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mcp: Option<RawMcp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcp {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    tools: Vec<RawMcpTool>,
    #[serde(default)]
    client_messages: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcpTool {
    name: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    consequential: Option<bool>,
    #[serde(default)]
    constraints: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    method: String,
    path: String,
    #[serde(default)]
    path_match: Option<String>,
    action: String,
    #[serde(default)]
    consequential: Option<bool>,
    #[serde(default)]
    constraints: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvidence {
    #[serde(default)]
    log: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDpop {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    iat_window_seconds: Option<u64>,
    #[serde(default)]
    allowed_algs: Option<Vec<String>>,
}

/// A header name the credential may travel in: a lower-case RFC 9110 token that the gateway does
/// not set itself for the callout.
fn valid_credential_header(h: &str) -> bool {
    const RESERVED: &[&str] =
        &["host", "content-type", "content-length", "accept", "transfer-encoding", "connection", "te", "upgrade"];
    !h.is_empty()
        && h.len() <= 64
        && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !RESERVED.contains(&h)
}

// ---------------------------------------------------------------- runtime -------------------------

/// An upstream reached through an Envoy cluster with `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Envoy cluster name.
    pub cluster: String,
    /// `:authority` to send.
    pub authority: String,
    /// Path (with query, if any).
    pub path: String,
    /// Call timeout.
    pub timeout_ms: u64,
}

/// How an issuer's keys are obtained.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Keys given in the config.
    Inline(Vec<(Option<String>, VerifyingKey)>),
    /// Keys fetched from `jwks_uri`.
    Remote {
        /// Where.
        upstream: Upstream,
        /// Refresh period.
        refresh_seconds: u64,
        /// Minimum time between two fetches triggered by an unknown `kid`.
        min_refetch_seconds: u64,
        /// Longest JWKS document accepted.
        max_bytes: usize,
        /// Most entries a JWKS may list.
        max_keys: usize,
    },
}

/// A Mission state authority (SPEC §3).
#[derive(Debug, Clone)]
pub struct MissionAuthority {
    /// Mission Status endpoint.
    pub status: Upstream,
    /// State-event feed, if the authority publishes one.
    pub events: Option<Upstream>,
    /// Audience this gateway names in status requests; the answer's `aud` must equal it.
    pub audience: String,
    /// Never rely on a status answer older than this.
    pub max_staleness_seconds: u64,
    /// Credential sent to the authority (Mission Status and the event feed), if any: the value of
    /// [`MissionAuthority::credential_header`]. mTLS is configured on the Envoy cluster instead.
    pub credential: Option<String>,
    /// Header that carries `credential` (lower case; default `authorization`).
    pub credential_header: String,
    /// `Retry-After` sent with a 503 when the authority cannot be reached.
    pub retry_after_seconds: u32,
}

/// A trusted issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Exact `iss` string.
    pub issuer: String,
    /// Keys.
    pub keys: KeySource,
    /// Whether access tokens from it are accepted.
    pub access_tokens: bool,
    /// Present when it is a Mission state authority.
    pub mission_authority: Option<MissionAuthority>,
}

/// The AuthZEN PDP (SPEC §4).
#[derive(Debug, Clone)]
pub struct Pdp {
    /// `POST /access/v1/evaluation`.
    pub evaluation: Upstream,
    /// `Retry-After` on a 503 when the PDP cannot be reached.
    pub retry_after_seconds: u32,
    /// How long a plain or requestable denial is remembered.
    pub deny_cache_seconds: i64,
    /// AuthZEN subject type of the agent.
    pub subject_type: String,
    /// `Authorization` header value sent with every evaluation (the gateway's credential at the PDP).
    pub credential: Option<String>,
}

fn parse_mode(v: Option<&str>, field: &str) -> Result<Option<Mode>, ConfigError> {
    match v {
        None => Ok(None),
        Some("enforce") => Ok(Some(Mode::Enforce)),
        Some("shadow") => Ok(Some(Mode::Shadow)),
        Some(_) => Err(err(field, "must be enforce or shadow")),
    }
}

/// Which decisions produce a log line (every decision always sets filter state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceLog {
    /// Every decision.
    All,
    /// Denials only.
    Denials,
    /// None.
    Off,
}

/// DPoP settings.
#[derive(Debug, Clone)]
pub struct DpopConfig {
    /// Accept `Authorization: DPoP`.
    pub enabled: bool,
    /// Accepted proof age (and future skew), seconds.
    pub iat_window_seconds: i64,
    /// Accepted proof algorithms.
    pub algs: Vec<Alg>,
}

/// The validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Trusted issuers.
    pub issuers: Vec<Issuer>,
    /// Index by `iss`.
    pub issuer_index: HashMap<String, usize>,
    /// Accepted token algorithms.
    pub algs: Vec<Alg>,
    /// Clock skew, seconds.
    pub clock_skew: i64,
    /// Maximum `exp - iat`, if set.
    pub max_token_lifetime: Option<i64>,
    /// Longest accepted token.
    pub max_token_bytes: usize,
    /// Verified-token cache capacity.
    pub token_cache_size: usize,
    /// Destinations by lower-case `:authority`.
    pub destinations: HashMap<String, Destination>,
    /// Evidence logging.
    pub evidence_log: EvidenceLog,
    /// DPoP.
    pub dpop: DpopConfig,
    /// `realm` in challenges.
    pub realm: String,
    /// PDP, when requests outside the authority (and consequential ones) are evaluated.
    pub pdp: Option<Pdp>,
    /// Origins the gateway lets through for any valid Mission-bound token (destination level).
    pub egress_allow: Vec<String>,
    /// Largest request body buffered for a digest; larger is `413`.
    pub max_body_bytes: usize,
    /// The filter's mode: every destination without a `mode` of its own, and requests that name
    /// no destination at all.
    pub mode: Mode,
}

impl Config {
    /// Parse and validate the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| {
            // serde's message names the field for unknown/missing members and wrong types.
            err(format!("(line {}, column {})", e.line(), e.column()), e.to_string())
        })?;
        Config::validate(raw)
    }

    /// Validation as named stages, in the order the configuration is described (token algorithms and
    /// keys, then destinations, then the rest). The order is also the order errors are found in:
    /// the first failing stage names the field.
    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let algs = validate_token_algs(raw.allowed_algs.as_deref())?;
        let (issuers, issuer_index) = validate_issuers(raw.issuers)?;
        let destinations = validate_destinations(raw.destinations)?;
        let evidence_log = validate_evidence(raw.evidence)?;
        let dpop = validate_dpop(raw.dpop)?;
        let (token_cache_size, max_token_bytes) = validate_token_limits(raw.token_cache_size, raw.max_token_bytes)?;
        let realm = validate_realm(raw.realm)?;
        let pdp = raw.pdp.map(validate_pdp).transpose()?;
        let egress_allow = validate_egress_allow(&raw.egress_allow)?;
        let max_body_bytes = validate_max_body_bytes(raw.max_body_bytes)?;
        let mode = parse_mode(raw.mode.as_deref(), "mode")?.unwrap_or_default();
        Ok(Config {
            mode,
            pdp,
            egress_allow,
            max_body_bytes,
            issuers,
            issuer_index,
            algs,
            clock_skew: i64::try_from(raw.clock_skew_seconds.unwrap_or(60).min(3600)).unwrap_or(60),
            max_token_lifetime: raw.max_token_lifetime_seconds.and_then(|s| i64::try_from(s).ok()),
            max_token_bytes,
            token_cache_size,
            destinations,
            evidence_log,
            dpop,
            realm,
        })
    }

    /// The destination for a request `:authority` and `:scheme`.
    ///
    /// A `CONNECT` target is `host:port`; the tunnel carries TLS, so its origin is `https://host[:port]`
    /// and a configured destination `host` also matches `host:443`.
    pub fn destination(&self, authority: &str, scheme: &str, connect: bool) -> Option<DestinationRef<'_>> {
        let key = authority.to_ascii_lowercase();
        if let Some(d) = self.destinations.get(&key) {
            return Some(DestinationRef::Known(d));
        }
        let scheme = if connect { "https" } else { scheme };
        // `host:443` (https) and `host:80` (http) name the same destination as `host`.
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" => Some(":443"),
            "http" => Some(":80"),
            _ => None,
        };
        if let Some(d) = default_port.and_then(|p| key.strip_suffix(p)).and_then(|h| self.destinations.get(h)) {
            return Some(DestinationRef::Known(d));
        }
        uri::origin_of(scheme, &key).map(DestinationRef::Implicit)
    }
}

/// Token (and authority answer) algorithms when `allowed_algs` is absent.
pub const DEFAULT_TOKEN_ALGS: [Alg; 4] = [Alg::Es256, Alg::EdDsa, Alg::Rs256, Alg::Ps256];

/// Stage: the token algorithms (`allowed_algs`).
fn validate_token_algs(names: Option<&[String]>) -> Result<Vec<Alg>, ConfigError> {
    // RS256 is on by default: RFC 9068 §2.1 makes it mandatory to implement for resource servers.
    // Each alg verifies only with a key of its own type, so the wider list adds no confusion.
    parse_algs(names, "allowed_algs", &DEFAULT_TOKEN_ALGS)
}

/// Stage: the issuers and their keys; at least one of them a mission authority.
fn validate_issuers(raw: Vec<RawIssuer>) -> Result<(Vec<Issuer>, HashMap<String, usize>), ConfigError> {
    if raw.is_empty() {
        return Err(err("issuers", "at least one issuer is required"));
    }
    let mut issuers = Vec::new();
    let mut issuer_index = HashMap::new();
    for (i, ri) in raw.into_iter().enumerate() {
        let f = format!("issuers[{i}]");
        if ri.issuer.is_empty() {
            return Err(err(format!("{f}.issuer"), "must not be empty"));
        }
        if issuer_index.insert(ri.issuer.clone(), i).is_some() {
            return Err(err(format!("{f}.issuer"), "duplicate issuer"));
        }
        issuers.push(validate_issuer(ri, &f)?);
    }
    if !issuers.iter().any(|i| i.mission_authority.is_some()) {
        return Err(err("issuers", "at least one issuer must be a mission_authority"));
    }
    Ok((issuers, issuer_index))
}

/// One issuer: its key source, then its mission authority.
fn validate_issuer(ri: RawIssuer, f: &str) -> Result<Issuer, ConfigError> {
    let RawIssuer { issuer, access_tokens, mission_authority, .. } = ri;
    let keys = validate_key_source(
        KeyBounds {
            max_bytes: ri.jwks_max_bytes,
            max_keys: ri.jwks_max_keys,
            refresh_seconds: ri.jwks_refresh_seconds,
            min_refetch_seconds: ri.jwks_min_refetch_seconds,
        },
        ri.jwks,
        ri.jwks_uri,
        f,
    )?;
    let mission_authority =
        mission_authority.map(|m| validate_mission_authority(m, &format!("{f}.mission_authority"))).transpose()?;
    if !access_tokens && mission_authority.is_none() {
        return Err(err(f, "an issuer must accept access_tokens or be a mission_authority"));
    }
    Ok(Issuer { issuer, keys, access_tokens, mission_authority })
}

/// An issuer's JWKS fetch bounds, as configured.
struct KeyBounds {
    max_bytes: Option<usize>,
    max_keys: Option<usize>,
    refresh_seconds: Option<u64>,
    min_refetch_seconds: Option<u64>,
}

/// An issuer's keys: inline `jwks` or a `jwks_uri`, with the fetch bounds.
fn validate_key_source(
    bounds: KeyBounds,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<RawUpstream>,
    f: &str,
) -> Result<KeySource, ConfigError> {
    let max_bytes = bounds.max_bytes.unwrap_or(MAX_JWKS_BYTES);
    if !(1024..=4 * 1_048_576).contains(&max_bytes) {
        return Err(err(format!("{f}.jwks_max_bytes"), "must be between 1024 and 4194304"));
    }
    let max_keys = bounds.max_keys.unwrap_or(MAX_JWKS_KEYS);
    if !(1..=1000).contains(&max_keys) {
        return Err(err(format!("{f}.jwks_max_keys"), "must be between 1 and 1000"));
    }
    Ok(match (jwks, jwks_uri) {
        (Some(_), Some(_)) => return Err(err(f, "give either jwks or jwks_uri, not both")),
        (None, None) => return Err(err(f, "one of jwks or jwks_uri is required")),
        (Some(v), None) => KeySource::Inline(parse_inline_jwks(v, &format!("{f}.jwks"))?),
        (None, Some(u)) => KeySource::Remote {
            upstream: upstream(u, &format!("{f}.jwks_uri"))?,
            refresh_seconds: positive(bounds.refresh_seconds, 300, &format!("{f}.jwks_refresh_seconds"))?,
            min_refetch_seconds: bounds.min_refetch_seconds.unwrap_or(10),
            max_bytes,
            max_keys,
        },
    })
}

/// An issuer's `mission_authority`: audience, credential, status and events upstreams.
fn validate_mission_authority(m: RawMissionAuthority, mf: &str) -> Result<MissionAuthority, ConfigError> {
    if m.audience.is_empty() {
        return Err(err(format!("{mf}.audience"), "must not be empty"));
    }
    if let Some(c) = &m.credential {
        if c.is_empty() || !c.bytes().all(|b| (0x20..=0x7e).contains(&b)) || c.starts_with(' ') {
            return Err(err(format!("{mf}.credential"), "must be a non-empty header value of visible ASCII"));
        }
    }
    let credential_header = m.credential_header.unwrap_or_else(|| "authorization".to_owned());
    if !valid_credential_header(&credential_header) {
        return Err(err(
            format!("{mf}.credential_header"),
            "must be a lower-case header name token, not a pseudo-header nor one the gateway sets \
             (host, content-type, content-length, accept, transfer-encoding, connection, te)",
        ));
    }
    Ok(MissionAuthority {
        status: upstream(m.status, &format!("{mf}.status"))?,
        events: m.events.map(|e| upstream(e, &format!("{mf}.events"))).transpose()?,
        audience: m.audience,
        max_staleness_seconds: positive(m.max_staleness_seconds, 300, &format!("{mf}.max_staleness_seconds"))?,
        credential: m.credential,
        credential_header,
        retry_after_seconds: m.retry_after_seconds.unwrap_or(1),
    })
}

/// Stage: the destinations, keyed by lower-cased authority.
fn validate_destinations(raw: Vec<RawDestination>) -> Result<HashMap<String, Destination>, ConfigError> {
    let mut destinations = HashMap::new();
    for (i, d) in raw.into_iter().enumerate() {
        let f = format!("destinations[{i}]");
        let (authority, dest) = validate_destination(d, &f)?;
        if destinations.insert(authority, dest).is_some() {
            return Err(err(format!("{f}.authority"), "duplicate destination"));
        }
    }
    Ok(destinations)
}

/// One destination: authority and origin, operations, audience and resource, consequential
/// methods, effect headers, mode, MCP server.
fn validate_destination(d: RawDestination, f: &str) -> Result<(String, Destination), ConfigError> {
    let authority = d.authority.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('/') {
        return Err(err(format!("{f}.authority"), "must be a host[:port]"));
    }
    let origin = match d.origin {
        Some(o) => uri::parse_origin(&o).ok_or_else(|| err(format!("{f}.origin"), "must be scheme://host[:port]"))?,
        None => uri::origin_of("http", &authority).ok_or_else(|| err(format!("{f}.authority"), "not a valid host"))?,
    };
    let mut operations = Vec::new();
    for (j, o) in d.operations.into_iter().enumerate() {
        operations.push(validate_operation(o, &format!("{f}.operations[{j}]"))?);
    }
    let audience = d.audience.unwrap_or_else(|| origin.clone());
    let resource = match d.resource {
        None => None,
        Some(r) => {
            let (o, p) = uri::parse_resource(&r).ok_or_else(|| {
                err(
                    format!("{f}.resource"),
                    "must be an absolute URI scheme://host[:port][/path], without query or fragment",
                )
            })?;
            Some(format!("{o}{p}"))
        }
    };
    let consequential_methods = match d.consequential_methods {
        None => None,
        Some(ms) => {
            for (j, m) in ms.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(err(format!("{f}.consequential_methods[{j}]"), "must be an HTTP method"));
                }
            }
            Some(ms.into_iter().map(|m| m.to_ascii_uppercase()).collect())
        }
    };
    let mut effect_headers = Vec::new();
    for (j, h) in d.effect_headers.into_iter().enumerate() {
        if h.is_empty() || h.starts_with(':') || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(format!("{f}.effect_headers[{j}]"), "must be a header name"));
        }
        effect_headers.push(h.to_ascii_lowercase());
    }
    let mode = parse_mode(d.mode.as_deref(), &format!("{f}.mode"))?;
    let mcp = d.mcp.map(|m| parse_mcp(m, &format!("{f}.mcp"))).transpose()?;
    let dest = Destination { origin, audience, resource, operations, consequential_methods, effect_headers, mode, mcp };
    Ok((authority, dest))
}

/// One named operation of a destination.
fn validate_operation(o: RawOperation, of: &str) -> Result<Operation, ConfigError> {
    let prefix = match o.path_match.as_deref() {
        None | Some("exact") => false,
        Some("prefix") => true,
        Some(_) => return Err(err(format!("{of}.path_match"), "must be exact or prefix")),
    };
    if !missiongate_wire::rar::valid_action_id(&o.action) {
        return Err(err(format!("{of}.action"), "action ids match [A-Za-z0-9_.:-]+"));
    }
    let path = uri::normalize_path(&o.path).ok_or_else(|| err(format!("{of}.path"), "must be an absolute path"))?;
    // A path no request can carry (the filter refuses it as ambiguous) would never match.
    if let Err(e) = uri::request_path(&path) {
        return Err(err(format!("{of}.path"), format!("can never match a request: {}", e.describe())));
    }
    if o.path.contains(['?', '#']) {
        return Err(err(format!("{of}.path"), "must not have a query or fragment"));
    }
    if o.method.is_empty() || !o.method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(err(format!("{of}.method"), "must be an HTTP method"));
    }
    let constraints = match &o.constraints {
        None => Vec::new(),
        Some(c) => crate::constraints::parse_mappings(c, &format!("{of}.constraints"))?,
    };
    Ok(Operation {
        method: o.method.to_ascii_uppercase(),
        path,
        prefix,
        action: o.action,
        consequential: o.consequential,
        constraints,
    })
}

/// Stage: `evidence.log`.
fn validate_evidence(raw: Option<RawEvidence>) -> Result<EvidenceLog, ConfigError> {
    match raw.and_then(|e| e.log).as_deref() {
        None | Some("all") => Ok(EvidenceLog::All),
        Some("denials") => Ok(EvidenceLog::Denials),
        Some("off") => Ok(EvidenceLog::Off),
        Some(_) => Err(err("evidence.log", "must be all, denials or off")),
    }
}

/// Stage: DPoP (on by default, ES256 and EdDSA proofs, a 60-second `iat` window).
fn validate_dpop(raw: Option<RawDpop>) -> Result<DpopConfig, ConfigError> {
    Ok(match raw {
        None => DpopConfig { enabled: true, iat_window_seconds: 60, algs: vec![Alg::Es256, Alg::EdDsa] },
        Some(d) => DpopConfig {
            enabled: d.enabled.unwrap_or(true),
            iat_window_seconds: {
                // A proof is remembered for its window: an hour at most keeps the replay ledger's
                // expiry arithmetic far from overflow and its entries short-lived.
                let w = positive(d.iat_window_seconds, 60, "dpop.iat_window_seconds")?;
                if w > 3600 {
                    return Err(err("dpop.iat_window_seconds", "must be at most 3600"));
                }
                i64::try_from(w).unwrap_or(60)
            },
            algs: parse_algs(d.allowed_algs.as_deref(), "dpop.allowed_algs", &[Alg::Es256, Alg::EdDsa])?,
        },
    })
}

/// Stage: the token limits (`token_cache_size`, `max_token_bytes`).
fn validate_token_limits(cache_size: Option<usize>, max_bytes: Option<usize>) -> Result<(usize, usize), ConfigError> {
    let token_cache_size = cache_size.unwrap_or(1024);
    if token_cache_size > 1_000_000 {
        return Err(err("token_cache_size", "at most 1000000"));
    }
    let max_token_bytes = max_bytes.unwrap_or(8192);
    if !(256..=1_048_576).contains(&max_token_bytes) {
        return Err(err("max_token_bytes", "must be between 256 and 1048576"));
    }
    Ok((token_cache_size, max_token_bytes))
}

/// Stage: the challenge `realm` (quoted-string safe).
fn validate_realm(raw: Option<String>) -> Result<String, ConfigError> {
    let realm = raw.unwrap_or_else(|| "missiongate".to_owned());
    if realm.contains('"') || realm.contains('\\') || realm.chars().any(char::is_control) {
        return Err(err("realm", "must not contain quotes, backslashes or control characters"));
    }
    Ok(realm)
}

/// Stage: the PDP, when one is configured.
fn validate_pdp(p: RawPdp) -> Result<Pdp, ConfigError> {
    if let Some(c) = &p.credential {
        if c.trim().is_empty() || !c.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(err("pdp.credential", "must be a non-empty header value of visible ASCII"));
        }
    }
    Ok(Pdp {
        evaluation: upstream(p.evaluation, "pdp.evaluation")?,
        retry_after_seconds: p.retry_after_seconds.unwrap_or(1),
        deny_cache_seconds: i64::try_from(p.deny_cache_seconds.unwrap_or(1).min(300)).unwrap_or(1),
        subject_type: p.subject_type.unwrap_or_else(|| "agent".to_owned()),
        credential: p.credential,
    })
}

/// Stage: `egress_allow`, the origins reachable without a Mission.
fn validate_egress_allow(raw: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut egress_allow = Vec::new();
    for (i, o) in raw.iter().enumerate() {
        egress_allow.push(
            uri::parse_origin(o).ok_or_else(|| err(format!("egress_allow[{i}]"), "must be scheme://host[:port]"))?,
        );
    }
    Ok(egress_allow)
}

/// Stage: `max_body_bytes`.
fn validate_max_body_bytes(raw: Option<usize>) -> Result<usize, ConfigError> {
    let max_body_bytes = raw.unwrap_or(1_048_576);
    if !(1..=16 * 1_048_576).contains(&max_body_bytes) {
        return Err(err("max_body_bytes", "must be between 1 and 16777216"));
    }
    Ok(max_body_bytes)
}

fn parse_algs(names: Option<&[String]>, field: &str, default: &[Alg]) -> Result<Vec<Alg>, ConfigError> {
    let Some(names) = names else { return Ok(default.to_vec()) };
    if names.is_empty() {
        return Err(err(field, "must list at least one algorithm"));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if n == "none" {
                Err(err(format!("{field}[{i}]"), "\"none\" is never accepted"))
            } else if Alg::is_hmac_name(n) {
                Err(err(
                    format!("{field}[{i}]"),
                    "HMAC algorithms are not accepted: a shared secret cannot be held safely by a gateway",
                ))
            } else {
                Alg::from_name(n).ok_or_else(|| {
                    err(
                        format!("{field}[{i}]"),
                        format!("unsupported algorithm {n:?}; supported: ES256, EdDSA, RS256, PS256"),
                    )
                })
            }
        })
        .collect()
}

fn parse_inline_jwks(v: serde_json::Value, field: &str) -> Result<Vec<(Option<String>, VerifyingKey)>, ConfigError> {
    let set: JwkSet = serde_json::from_value(v).map_err(|e| err(field, format!("not a JWK Set: {e}")))?;
    if set.keys.is_empty() {
        return Err(err(format!("{field}.keys"), "must contain at least one key"));
    }
    let keys = set
        .keys
        .iter()
        .enumerate()
        .map(|(i, k): (usize, &Jwk)| {
            k.verifying_key()
                .map(|vk| (k.kid.clone(), vk))
                .map_err(|e| err(format!("{field}.keys[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(within_table_budget(keys))
}

fn parse_mcp(m: RawMcp, f: &str) -> Result<McpServer, ConfigError> {
    let raw_path = m.path.unwrap_or_else(|| "/mcp".to_owned());
    if raw_path.contains(['?', '#']) {
        return Err(err(format!("{f}.path"), "must not have a query or fragment"));
    }
    let path = uri::normalize_path(&raw_path).ok_or_else(|| err(format!("{f}.path"), "must be an absolute path"))?;
    if let Err(e) = uri::request_path(&path) {
        return Err(err(format!("{f}.path"), format!("can never match a request: {}", e.describe())));
    }
    let client_messages = match m.client_messages.as_deref() {
        None | Some("decide") => ClientMessages::Decide,
        Some("pass") => ClientMessages::Pass,
        Some(_) => return Err(err(format!("{f}.client_messages"), "must be decide or pass")),
    };
    let mut tools: Vec<McpTool> = Vec::new();
    for (i, t) in m.tools.into_iter().enumerate() {
        let tf = format!("{f}.tools[{i}]");
        if !valid_tool_name(&t.name) {
            return Err(err(format!("{tf}.name"), "tool names match [A-Za-z0-9_.-]{1,128}"));
        }
        if tools.iter().any(|x| x.name == t.name) {
            return Err(err(format!("{tf}.name"), "duplicate tool"));
        }
        if let Some(a) = &t.action {
            if !missiongate_wire::rar::valid_action_id(a) {
                return Err(err(format!("{tf}.action"), "action ids match [A-Za-z0-9_.:-]+"));
            }
        }
        let constraints = match &t.constraints {
            None => Vec::new(),
            Some(c) => crate::constraints::parse_mappings(c, &format!("{tf}.constraints"))?,
        };
        tools.push(McpTool { name: t.name, action: t.action, consequential: t.consequential, constraints });
    }
    Ok(McpServer { path, tools, client_messages })
}

fn upstream(u: RawUpstream, field: &str) -> Result<Upstream, ConfigError> {
    if u.cluster.is_empty() {
        return Err(err(format!("{field}.cluster"), "must name an Envoy cluster"));
    }
    if !u.path.starts_with('/') {
        return Err(err(format!("{field}.path"), "must start with /"));
    }
    let timeout_ms = u.timeout_ms.unwrap_or(1000);
    if !(1..=120_000).contains(&timeout_ms) {
        return Err(err(format!("{field}.timeout_ms"), "must be between 1 and 120000"));
    }
    let authority = u.authority.unwrap_or_else(|| u.cluster.clone());
    Ok(Upstream { cluster: u.cluster, authority, path: u.path, timeout_ms })
}

fn positive(v: Option<u64>, default: u64, field: &str) -> Result<u64, ConfigError> {
    match v {
        Some(0) => Err(err(field, "must be greater than 0")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_examples_parse() {
        for (name, text) in [
            ("minimal", include_str!("../../examples/minimal.json")),
            ("full", include_str!("../../examples/full.json")),
        ] {
            Config::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let c = Config::parse(include_str!("../../examples/full.json").as_bytes()).unwrap();
        assert_eq!(c.evidence_log, EvidenceLog::Denials);
        assert_eq!(c.destinations["api.partner.example"].operations.len(), 4);
        let d = c.destination("api.partner.example", "http", false).unwrap();
        assert!(d.consequential("POST", "/v1/payments"), "POST is consequential by the destination's methods");
        assert!(!d.consequential("POST", "/v1/search"), "a named operation exempts itself");
        assert!(d.consequential("GET", "/v1/exports/q3"), "a named GET operation binds itself");
        assert!(!d.consequential("GET", "/v1/invoices"));
        assert!(!d.consequential("CONNECT", "/"));
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(d.mode(c.mode), Mode::Shadow, "the example's destination is in shadow mode");
    }

    #[test]
    fn mode_is_enforce_by_default_and_a_destination_may_override_it() {
        let full = include_str!("../../examples/full.json");
        let c = Config::parse(include_str!("../../examples/minimal.json").as_bytes()).unwrap();
        assert_eq!(c.mode, Mode::Enforce);
        let c = Config::parse(full.replace("\"mode\": \"enforce\"", "\"mode\": \"shadow\"").as_bytes()).unwrap();
        assert_eq!(c.mode, Mode::Shadow);
        let c = Config::parse(full.replace("\"mode\": \"shadow\"", "\"mode\": \"enforce\"").as_bytes()).unwrap();
        let d = c.destination("api.partner.example", "http", false).unwrap();
        assert_eq!(d.mode(Mode::Shadow), Mode::Enforce, "a destination's own mode wins");
        let other = c.destination("elsewhere.example", "http", false).unwrap();
        assert_eq!(other.mode(Mode::Shadow), Mode::Shadow, "an unlisted destination follows the filter");
        assert_eq!(err_of(&full.replace("\"mode\": \"enforce\"", "\"mode\": \"watch\"")).field, "mode");
        assert_eq!(err_of(&full.replace("\"mode\": \"shadow\"", "\"mode\": \"Shadow\"")).field, "destinations[0].mode");
    }

    /// The fields the parser accepts in the object at `pointer` of `full`: serde's unknown-field
    /// error lists them all.
    fn accepted_fields(full: &serde_json::Value, pointer: &str) -> Vec<String> {
        let mut probe = full.clone();
        probe
            .pointer_mut(pointer)
            .and_then(|o| o.as_object_mut())
            .unwrap_or_else(|| panic!("no object at {pointer}"))
            .insert("__probe".into(), 1.into());
        let e = Config::parse(probe.to_string().as_bytes()).unwrap_err();
        let list = e
            .message
            .split_once("expected one of ")
            .or_else(|| e.message.split_once("expected "))
            .map(|(_, l)| l.split(" at line ").next().unwrap_or(l).to_owned())
            .unwrap_or_else(|| panic!("{pointer}: {e}"));
        let mut fields: Vec<String> =
            list.split(", ").map(|f| f.trim_matches(|c| c == '`' || c == ' ').to_owned()).collect();
        fields.sort();
        fields
    }

    /// The schema, the parser and the "every field" example list exactly the same fields, in every
    /// object of the configuration: none of the three can drift from the others.
    #[test]
    fn schema_parser_and_full_example_agree_on_every_field() {
        let schema: serde_json::Value = serde_json::from_str(include_str!("../../config.schema.json")).unwrap();
        let full: serde_json::Value = serde_json::from_str(include_str!("../../examples/full.json")).unwrap();
        let places = [
            ("", "/properties"),
            ("/issuers/0", "/$defs/issuer/properties"),
            ("/issuers/0/jwks_uri", "/$defs/upstream/properties"),
            ("/issuers/0/mission_authority", "/$defs/mission_authority/properties"),
            ("/destinations/0", "/$defs/destination/properties"),
            ("/destinations/0/operations/0", "/$defs/destination/properties/operations/items/properties"),
            ("/destinations/1/mcp", "/$defs/destination/properties/mcp/properties"),
            ("/destinations/1/mcp/tools/0", "/$defs/destination/properties/mcp/properties/tools/items/properties"),
            ("/evidence", "/properties/evidence/properties"),
            ("/dpop", "/properties/dpop/properties"),
            ("/pdp", "/properties/pdp/properties"),
        ];
        for (pointer, schema_pointer) in places {
            let parser = accepted_fields(&full, pointer);
            let mut documented: Vec<String> = schema
                .pointer(schema_pointer)
                .and_then(|o| o.as_object())
                .unwrap_or_else(|| panic!("schema has no {schema_pointer}"))
                .keys()
                .cloned()
                .collect();
            documented.sort();
            assert_eq!(parser, documented, "parser vs schema at {pointer:?}");
            // The full example shows every field (over all array items at that level).
            let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", ""));
            let siblings: Vec<&serde_json::Value> = match full.pointer(parent).and_then(|v| v.as_array()) {
                Some(items) if last.parse::<usize>().is_ok() => items.iter().collect(),
                _ => vec![full.pointer(pointer).unwrap()],
            };
            let mut shown: Vec<String> = siblings.iter().flat_map(|o| o.as_object().unwrap().keys().cloned()).collect();
            shown.sort();
            shown.dedup();
            let missing: Vec<&String> = documented.iter().filter(|f| !shown.contains(f)).collect();
            assert!(missing.is_empty(), "examples/full.json at {pointer:?} does not show {missing:?}");
        }
    }

    #[test]
    fn destination_resource_and_operation_paths_are_validated() {
        let full = include_str!("../../examples/full.json");
        let c = Config::parse(full.as_bytes()).unwrap();
        let d = c.destination("api.partner.example", "http", false).unwrap();
        assert_eq!(d.resource(), Some("https://partner.example/erp"));
        let c = Config::parse(full.replace("https://partner.example/erp", "HTTPS://Partner.Example:443").as_bytes())
            .unwrap();
        assert_eq!(c.destinations["api.partner.example"].resource.as_deref(), Some("https://partner.example/"));
        for bad in [
            "partner.example/erp",
            "https://partner.example/erp?x=1",
            "https://partner.example/#f",
            "https://u@p.example",
        ] {
            let e = err_of(&full.replace("https://partner.example/erp", bad));
            assert_eq!(e.field, "destinations[0].resource", "{bad}");
        }
        for bad in ["/v1/pay;x", "/v1/%2Fpay", "/v1//pay", "/v1/pay?x=1", "v1/pay"] {
            let e = err_of(&full.replace("\"path\": \"/v1/payments\"", &format!("\"path\": \"{bad}\"")));
            assert_eq!(e.field, "destinations[0].operations[0].path", "{bad}");
        }
        // A path in another spelling of its normal form is normalised at load.
        let c = Config::parse(full.replace("\"path\": \"/v1/payments\"", "\"path\": \"/v1/./p%61yments\"").as_bytes())
            .unwrap();
        assert_eq!(c.destinations["api.partner.example"].operations[0].path, "/v1/payments");
    }

    #[test]
    fn constraint_mappings_are_validated_with_field_named_errors() {
        let full = include_str!("../../examples/full.json");
        let c = Config::parse(full.as_bytes()).unwrap();
        let op = &c.destinations["api.partner.example"].operations[0];
        assert_eq!(op.constraints.len(), 3);
        let f = "destinations[0].operations[0].constraints";
        let swap = |from: &str, to: &str| {
            assert!(full.contains(from), "{from}");
            err_of(&full.replace(from, to))
        };
        let e = swap("\"amount\": \"/amount\"", "\"amount\": \"amount\"");
        assert_eq!(e.field, format!("{f}.max_amount.amount"));
        let e = swap("\"amount\": \"/amount\", ", "");
        assert_eq!(e.field, format!("{f}.max_amount.amount"));
        let e = swap("\"currency\": \"/currency\"", "\"currency\": \"/currency\", \"x\": \"/x\"");
        assert_eq!(e.field, format!("{f}.max_amount.x"));
        let e = swap("\"one_of\": \"/vendor_id\"", "\"equals\": \"/vendor_id\"");
        assert_eq!(e.field, format!("{f}.vendors.one_of"));
        let e = swap("\"equals\": \"/tenant\"", "\"one_of\": \"/tenant\"");
        assert_eq!(e.field, format!("{f}.tenant.equals"));
        let e = swap("\"one_of\": \"/vendor_id\"", "\"one_of\": \"/a~2b\"");
        assert_eq!(e.field, format!("{f}.vendors.one_of"));
        let e = swap("\"vendors\": {", "\"bad name\": {");
        assert_eq!(e.field, format!("{f}.bad name"));
        let e = swap("\"tenant\": { \"equals\": \"/tenant\" }", "\"tenant\": \"/tenant\"");
        assert_eq!(e.field, format!("{f}.tenant"));
        // An MCP tool maps them into its call's `arguments`.
        let tool = c.destinations["mcp.partner.example"].mcp.as_ref().unwrap().tool("pay_invoice").unwrap();
        assert_eq!(tool.constraints.len(), 2);
        let e = swap("\"amount\": \"/invoice/amount\"", "\"amount\": 1");
        assert_eq!(e.field, "destinations[1].mcp.tools[0].constraints.max_amount.amount");
    }

    #[test]
    fn mcp_servers_are_configured_per_destination_with_field_named_errors() {
        let full = include_str!("../../examples/full.json");
        let c = Config::parse(full.as_bytes()).unwrap();
        let d = c.destination("mcp.partner.example", "https", false).unwrap();
        let m = d.mcp().unwrap();
        assert_eq!(m.path, "/mcp");
        assert!(m.is_endpoint("/mcp") && m.is_endpoint("/MCP/") && !m.is_endpoint("/mcp/x"));
        assert_eq!(m.client_messages, ClientMessages::Decide);
        let pay = m.tool("pay_invoice").unwrap();
        assert_eq!(pay.action.as_deref(), Some("payments:invoice.pay"));
        assert_eq!(pay.consequential, Some(true));
        assert_eq!(m.tool("list_open_invoices").unwrap().consequential, Some(false));
        assert!(m.tool("other").is_none());
        assert!(c.destination("api.partner.example", "http", false).unwrap().mcp().is_none());
        assert!(c.destination("elsewhere.example", "http", false).unwrap().mcp().is_none());
        // Defaults: path /mcp, no tools, client messages decided.
        let c = Config::parse(
            full.replace(
                r#""mcp": {
        "path": "/mcp","#,
                r#""mcp": {"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.destinations["mcp.partner.example"].mcp.as_ref().unwrap().path, "/mcp");
        let with = |from: &str, to: &str| {
            assert!(full.contains(from), "{from}");
            err_of(&full.replace(from, to))
        };
        for (from, to, field) in [
            ("\"path\": \"/mcp\"", "\"path\": \"mcp\"", "destinations[1].mcp.path"),
            ("\"path\": \"/mcp\"", "\"path\": \"/mcp?x=1\"", "destinations[1].mcp.path"),
            ("\"path\": \"/mcp\"", "\"path\": \"/a//mcp\"", "destinations[1].mcp.path"),
            ("\"name\": \"pay_invoice\"", "\"name\": \"pay invoice\"", "destinations[1].mcp.tools[0].name"),
            ("\"name\": \"pay_invoice\"", "\"name\": \"\"", "destinations[1].mcp.tools[0].name"),
            ("\"name\": \"list_open_invoices\"", "\"name\": \"pay_invoice\"", "destinations[1].mcp.tools[1].name"),
            ("\"payments:invoice.pay\"", "\"payments invoice\"", "destinations[1].mcp.tools[0].action"),
            ("\"client_messages\": \"decide\"", "\"client_messages\": \"drop\"", "destinations[1].mcp.client_messages"),
        ] {
            assert_eq!(with(from, to).field, field, "{to}");
        }
        let long = "t".repeat(129);
        assert_eq!(
            with("\"name\": \"pay_invoice\"", &format!("\"name\": \"{long}\"")).field,
            "destinations[1].mcp.tools[0].name"
        );
        let e = with("\"client_messages\": \"decide\"", "\"client_messages\": \"decide\", \"bogus\": 1");
        assert!(e.message.contains("bogus"), "{e}");
        let e = with("\"mcp\": {", "\"mcp\": true, \"x\": {");
        assert!(e.message.contains("invalid type"), "{e}");
    }

    fn err_of(json: &str) -> ConfigError {
        Config::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let base = include_str!("../../examples/minimal.json");
        let e = err_of(&base.replacen("\"issuers\"", "\"allowed_algs\": [\"ES256\", \"HS256\"], \"issuers\"", 1));
        assert_eq!(e.field, "allowed_algs[1]");
        let e = err_of(&base.replacen("\"issuers\"", "\"allowed_algs\": [\"none\"], \"issuers\"", 1));
        assert_eq!(e.field, "allowed_algs[0]");
        let e = err_of(&base.replace("\"path\": \"/jwks.json\"", "\"path\": \"jwks.json\""));
        assert_eq!(e.field, "issuers[0].jwks_uri.path");
        let e = err_of(&base.replace("\"audience\": \"https://gateway.example\"", "\"audience\": \"\""));
        assert_eq!(e.field, "issuers[0].mission_authority.audience");
        let e = err_of(&base.replacen("\"issuers\"", "\"bogus\": 1, \"issuers\"", 1));
        assert!(e.message.contains("bogus"), "{e}");
        let e = err_of("{\"issuers\": []}");
        assert_eq!(e.field, "issuers");
        // A DPoP window of more than an hour (its expiry arithmetic must stay far from overflow).
        let e = err_of(&base.replacen(
            "\"issuers\"",
            "\"dpop\": {\"iat_window_seconds\": 9223372036854775807}, \"issuers\"",
            1,
        ));
        assert_eq!(e.field, "dpop.iat_window_seconds");
        let e = err_of("not json");
        assert!(e.to_string().starts_with("invalid missiongate config"));
    }
}

//! The router's shared state and the constants every area shares.

use std::sync::Arc;

use crate::access::Access;
use crate::authority::Authority;
use crate::gateway::GatewayAuth;
use crate::util::sha256;

/// Largest request body accepted.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Media type of Mission Status responses.
pub const CONTENT_TYPE_MISSION_STATUS: &str = "application/mission-status-response+jwt";
/// Actor recorded for operator API calls.
pub const ACTOR_OPERATOR: &str = "operator";

/// Shared state of the router.
#[derive(Clone)]
pub struct HttpState {
    pub(crate) authority: Arc<Authority>,
    pub(crate) access: Arc<Access>,
    pub(crate) gateway: Arc<GatewayAuth>,
    pub(crate) operator_token_sha256: Arc<[u8; 32]>,
    pub(crate) metrics_token_sha256: Option<Arc<[u8; 32]>>,
}

impl HttpState {
    /// State for `authority` and the access service, with the operator API guarded by `operator_token`
    /// and the gateway surfaces (PDP, Mission Status, event feed) by `gateway`.
    pub fn new(
        authority: Arc<Authority>,
        access: Arc<Access>,
        operator_token: &str,
        gateway: Arc<GatewayAuth>,
    ) -> HttpState {
        HttpState {
            authority,
            access,
            gateway,
            operator_token_sha256: Arc::new(sha256(operator_token.as_bytes())),
            metrics_token_sha256: None,
        }
    }

    /// Also let `token` (the metrics scraper's credential) read `GET /metrics`.
    pub fn with_metrics_token(mut self, token: Option<&str>) -> HttpState {
        self.metrics_token_sha256 = token.map(|t| Arc::new(sha256(t.as_bytes())));
        self
    }
}

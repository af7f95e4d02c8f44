//! The gateways the suites run against, each with the stand-ins or the portal behind it. A suite
//! takes one as its `World` (`type World = WithPdp;`) and keeps its own tests.

use crate::authority::Authority;
use crate::envoy::{Envoy, Opts};
use crate::pdp::Pdp;
use crate::portal::Portal;
use crate::upstream::Upstream;

/// Envoy with the shipped config in front of the stand-in upstream, trusting the stand-in
/// authority.
pub struct WithAuthority {
    /// The upstream.
    pub up: Upstream,
    /// The stand-in authority (JWKS, Mission Status).
    pub auth: Authority,
    /// The gateway.
    pub envoy: Envoy,
}

impl WithAuthority {
    /// Start the upstream, the authority, then Envoy with `opts`.
    pub fn start(opts: Opts) -> WithAuthority {
        let up = Upstream::start(None);
        let auth = Authority::start();
        let envoy = Envoy::start(up.port, auth.port, opts);
        WithAuthority { up, auth, envoy }
    }
}

/// Envoy with the shipped config in front of the stand-in upstream, the real portal as its
/// authority and PDP.
pub struct WithPortal {
    /// The upstream.
    pub up: Upstream,
    /// The portal.
    pub portal: Portal,
    /// The gateway.
    pub envoy: Envoy,
}

impl WithPortal {
    /// Start the upstream, the portal with `portal_args`, then Envoy with `opts`.
    pub fn start(portal_args: &[&str], opts: Opts) -> WithPortal {
        let up = Upstream::start(None);
        let portal = Portal::start(portal_args);
        let envoy = Envoy::start(up.port, portal.port, opts);
        WithPortal { up, portal, envoy }
    }
}

/// Envoy with the shipped config and the PDP on, in front of the stand-in upstream, trusting the
/// stand-in authority, its PDP the stand-in PDP (its own cluster, so the PDP can fail while the
/// authority stays up).
pub struct WithPdp {
    /// The upstream.
    pub up: Upstream,
    /// The stand-in authority.
    pub auth: Authority,
    /// The stand-in PDP.
    pub pdp: Pdp,
    /// The gateway.
    pub envoy: Envoy,
}

impl WithPdp {
    /// Start the upstream, the authority, the PDP, then Envoy with `opts`, its PDP on and pointed
    /// at the stand-in (`opts.replace` applied after that).
    pub fn start(opts: Opts) -> WithPdp {
        let up = Upstream::start(None);
        let auth = Authority::start();
        let pdp = Pdp::start();
        let mut replace = missiongate_testkit::envoy::stand_in_pdp(auth.port, pdp.port);
        replace.extend(opts.replace.iter().cloned());
        let envoy = Envoy::start(up.port, auth.port, Opts { pdp: true, replace, ..opts });
        WithPdp { up, auth, pdp, envoy }
    }
}

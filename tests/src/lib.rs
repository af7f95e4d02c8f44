//! End-to-end harness: the real Envoy binary with the built `.wasm`, a hyper (axum) upstream, a
//! hyper stand-in authority (JWKS + signed Mission Status), all on ephemeral loopback ports.
//!
//! Tokens and status answers are minted with `jsonwebtoken`, an implementation independent of the
//! filter's own JOSE code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod authority;
pub mod bodies;
pub mod browser;
pub mod dpop;
pub mod egress;
pub mod envoy;
pub mod h2c;
pub mod pdp;
pub mod portal;
pub mod raw;
pub mod upstream;
pub mod world;

/// The launchers and the HTTP client live in the test kit, shared with the portal's own tests.
pub use missiongate_testkit::{free_port, http, postgres, repo_root, spawn};

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A tokio runtime shared by the servers of every test in a binary.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// Random base64url id.
pub fn rand_id(prefix: &str) -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    format!("{prefix}{}", missiongate_wire::b64::encode(b))
}

/// Serve `app` on `127.0.0.1:port` (rebinding a port that was just closed may take a moment).
pub fn serve_on(port: u16, app: axum::Router) -> tokio::task::JoinHandle<()> {
    let listener = rt().block_on(async {
        for _ in 0..50 {
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return l;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("cannot bind loopback port {port}")
    });
    rt().spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// Stop a server started by [`serve_on`]: its port refuses connections afterwards.
pub fn stop_serving(task: Option<tokio::task::JoinHandle<()>>) {
    if let Some(t) = task {
        t.abort();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

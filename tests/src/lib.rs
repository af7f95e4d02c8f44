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
pub mod http;
pub mod pdp;
pub mod portal;
pub mod postgres;
pub mod raw;
pub mod upstream;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A tokio runtime shared by the servers of every test in a binary.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Random base64url id.
pub fn rand_id(prefix: &str) -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    format!("{prefix}{}", missiongate_wire::b64::encode(b))
}

/// Spawn a child process that dies with this process, so no Envoy or portal outlives a test run
/// (tests keep shared servers in statics, which are never dropped).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits, so every child is
/// spawned from one thread that lives as long as the process.
pub fn spawn(cmd: std::process::Command) -> std::io::Result<std::process::Child> {
    use std::sync::mpsc;
    type Job = (std::process::Command, mpsc::Sender<std::io::Result<std::process::Child>>);
    static SPAWNER: OnceLock<std::sync::Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
        });
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .map_err(|_| std::io::Error::other("spawner poisoned"))?
        .send((cmd, reply_tx))
        .map_err(std::io::Error::other)?;
    reply_rx.recv().map_err(std::io::Error::other)?
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

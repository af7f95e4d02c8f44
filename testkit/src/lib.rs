//! The test kit: one way to start the processes every suite, the demo and the bench run against.
//!
//! - [`portal`]: `captive-portal serve` with its arguments, database and port, the wait for its
//!   `listening on` line, `kill -9` and a restart on the same port and database.
//! - [`envoy`]: the Envoy binary with a rendered config, the wait for its admin `/ready`, and
//!   `--mode validate`.
//! - [`postgres`]: a real Postgres server for the portal's tests.
//! - [`http`]: the raw HTTP/1.1 client the launchers and the end-to-end tests speak.
//!
//! It depends on neither the portal nor the filter: a launcher is given the binary to run (the
//! portal's own tests pass `env!("CARGO_BIN_EXE_captive-portal")`), so `captive-portal` takes this
//! crate as a dev-dependency. Processes are started with [`spawn`], so none outlives the test run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod envoy;
pub mod http;
pub mod portal;
pub mod postgres;

use std::path::PathBuf;
use std::sync::OnceLock;

/// Command-line arguments as owned strings.
pub(crate) fn os_args<I, S>(args: I) -> impl Iterator<Item = std::ffi::OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned())
}

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free loopback port for a server that is stopped and started again on the same port while
/// the test goes on (Postgres in the restart tests): one below the kernel's ephemeral range, so no
/// outgoing connection can be given it as its local port while the server is down. A port from
/// [`free_port`] lies inside that range, and a restart then failed now and then to bind it
/// (`pg_ctl: could not start server`) because one of the test's own connections held it.
pub fn restartable_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    const FROM: u16 = 20000;
    if low <= FROM + 1000 {
        return free_port();
    }
    let span = u32::from(low - FROM);
    let mut x =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
            ^ std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..200 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let port = FROM + ((x >> 8) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// Wait (at most `within`) until `port` on loopback can be bound again, as after a process that
/// listened on it was killed.
pub fn wait_port_free(port: u16, within: std::time::Duration) {
    let start = std::time::Instant::now();
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() && start.elapsed() <= within {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
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

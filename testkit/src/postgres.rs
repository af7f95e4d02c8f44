//! A real Postgres server for the tests, from Debian's `postgresql` package (`make postgres` installs
//! it): `initdb` into a fresh temporary directory, its own port on 127.0.0.1, trust authentication on
//! loopback only, stopped and removed when the test process ends (a small guardian process waits for
//! the test process to exit, so even a test binary that is killed leaves no server behind).
//!
//! Standard library only.
//!
//! `MISSIONGATE_TEST_DB=postgres` runs the portal tests against Postgres instead of SQLite:
//! [`db_arg`] turns the SQLite path a test chose into the URL of a database of its own on the
//! shared server (the same path always names the same database, so a test that restarts its portal
//! finds its data again).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that selects the database engine of the portal tests.
pub const TEST_DB_ENV: &str = "MISSIONGATE_TEST_DB";

/// Whether the portal tests run against Postgres.
pub fn postgres_selected() -> bool {
    std::env::var(TEST_DB_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("postgres"))
}

/// A running Postgres server in a temporary directory.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    run_as: Option<String>,
}

/// The directory of `initdb`, `pg_ctl`, `postgres`: `MISSIONGATE_PG_BIN`, else `pg_config --bindir`
/// (if it has `initdb`), else the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("MISSIONGATE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "Postgres is not installed: run `make postgres` (Debian package postgresql)".to_string())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb: run `make postgres`".into())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl PgServer {
    /// `initdb` a fresh cluster and start it.
    pub fn start() -> Result<PgServer, String> {
        let bin = pg_bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "mg-pg-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let data = dir.join("data");
        // initdb and postgres refuse to run as root: run them as the package's `postgres` user.
        let run_as = if is_root() { Some("postgres".to_string()) } else { None };
        if let Some(user) = &run_as {
            run(Command::new("chown").arg(format!("{user}:")).arg(&dir), "chown")?;
        }
        let server = PgServer { bin, dir, data, port: crate::restartable_port(), run_as };
        // The guardian: stops the server and removes the directory once this process is gone.
        server.spawn_guardian()?;
        let mut initdb = server.cmd("initdb");
        initdb.arg("-D").arg(&server.data).args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        run(&mut initdb, "initdb")?;
        server.start_again()?;
        Ok(server)
    }

    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn spawn_guardian(&self) -> Result<(), String> {
        let stop = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- "),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop}'{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data.display(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("guardian: {e}"))
    }

    /// Start the (stopped) server again, on the same port and data; waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=300 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB",
            self.port,
            self.dir.display()
        );
        let mut ctl = self.cmd("pg_ctl");
        ctl.arg("-D").arg(&self.data).arg("-l").arg(self.dir.join("server.log")).args(["-o", &opts, "-w", "-t", "120"]);
        ctl.arg("start");
        run(&mut ctl, "pg_ctl start").map_err(|e| {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}\nport {}; the server log ends:\n{}", self.port, tail.join("\n"))
        })
    }

    /// Stop the server (`fast`: connections are closed at once, as in a restart).
    pub fn stop(&self) -> Result<(), String> {
        let mut ctl = self.cmd("pg_ctl");
        ctl.arg("-D").arg(&self.data).args(["stop", "-m", "fast", "-w", "-t", "120"]);
        run(&mut ctl, "pg_ctl stop")
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The connection URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Run one SQL statement with `psql` against database `db`; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Create database `name` unless it exists; returns its URL.
    pub fn database(&self, name: &str) -> Result<String, String> {
        let exists = self.psql("postgres", &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"))?;
        if exists != "1" {
            if let Err(e) = self.psql("postgres", &format!("CREATE DATABASE {name}")) {
                // Another test created it meanwhile.
                if !e.contains("already exists") {
                    return Err(e);
                }
            }
        }
        Ok(self.url(name))
    }

    /// A fresh database with a unique name; returns its URL.
    pub fn fresh_database(&self) -> Result<String, String> {
        let name = format!("t_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        self.database(&name)
    }

    /// Wait until the server accepts connections (after [`PgServer::start_again`] elsewhere).
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut ctl = self.cmd("pg_ctl");
        ctl.arg("-D").arg(&self.data).args(["stop", "-m", "immediate"]);
        let _ = ctl.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server every test of this process shares (started on first use).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().unwrap_or_else(|e| panic!("cannot start Postgres for the tests: {e}")))
}

/// FNV-1a, 64 bits: a stable database name for a path (no dependency).
fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The Postgres database URL standing for the SQLite file `db` (created on first use).
pub fn url_for_path(db: &Path) -> String {
    let name = format!("t_{:016x}", fnv64(db.as_os_str().as_encoded_bytes()));
    shared().database(&name).unwrap_or_else(|e| panic!("test database: {e}"))
}

/// What to pass as `captive-portal serve --db`: the path itself, or with `MISSIONGATE_TEST_DB=postgres`
/// the URL of this path's own database on the shared test server.
pub fn db_arg(db: &Path) -> OsString {
    if postgres_selected() {
        url_for_path(db).into()
    } else {
        db.as_os_str().to_owned()
    }
}

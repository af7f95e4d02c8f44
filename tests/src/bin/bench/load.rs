//! Load: wrk scripts per scenario, a wrk run, and the one-request precheck.

use crate::scenarios::{Scenario, Tok, GET_PATH, HOST, POST_PATH};
use crate::settings::{pinned, Settings};
use missiongate_tests::http::Req;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub const DONE_LUA: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// The wrk script of a scenario. `hot`: its one token (for `Tok::Dpop`, the DPoP-bound token); `pool`:
/// the file of tokens (`Tok::Pool`) or proofs (`Tok::Dpop`), one per line; `offset`: where in the pool
/// a rotating script starts (None: at random).
pub fn script(
    s: &Settings,
    sc: &Scenario,
    hot: &str,
    pool: &Path,
    bodies: &BTreeMap<usize, PathBuf>,
    offset: Option<usize>,
) -> PathBuf {
    let mut lua = String::new();
    let method = if sc.body.is_some() { "POST" } else { "GET" };
    let path = if sc.body.is_some() { POST_PATH } else { GET_PATH };
    writeln!(lua, "wrk.method = \"{method}\"\nwrk.path = \"{path}\"\nwrk.headers[\"Host\"] = \"{HOST}\"").unwrap();
    if let Some(size) = sc.body {
        let f = bodies.get(&size).unwrap();
        writeln!(lua, "wrk.headers[\"Content-Type\"] = \"application/json\"").unwrap();
        writeln!(lua, "local f = assert(io.open([[{}]], \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()", f.display())
            .unwrap();
    }
    // A rotating pool: start at `offset` (in order, never twice until it runs out) or at random.
    let rotate = |header: &str, prefix: &str| {
        format!(
            r#"local pool = {{}}
for line in io.lines([[{}]]) do if #line > 0 then pool[#pool + 1] = "{prefix}" .. line end end
math.randomseed(os.time())
local i = {}
if i < 0 then i = math.random(#pool) end
i = i % #pool
request = function()
  i = i % #pool + 1
  wrk.headers["{header}"] = pool[i]
  return wrk.format()
end
"#,
            pool.display(),
            offset.map_or(-1, |o| o as i64)
        )
    };
    match sc.tok {
        Tok::Hot => writeln!(lua, "wrk.headers[\"Authorization\"] = \"Bearer {hot}\"").unwrap(),
        Tok::Pool => lua.push_str(&rotate("Authorization", "Bearer ")),
        Tok::Dpop => {
            writeln!(lua, "wrk.headers[\"Authorization\"] = \"DPoP {hot}\"").unwrap();
            lua.push_str(&rotate("DPoP", ""));
        }
    }
    lua.push_str(DONE_LUA);
    let p = s.work.join(format!("{}.lua", sc.id));
    std::fs::write(&p, lua).unwrap();
    p
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub requests: u64,
    pub duration_us: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Socket errors, timeouts and answers >= 400.
    pub errors: u64,
}

pub fn wrk(s: &Settings, script: &Path, port: u16, secs: u32) -> Run {
    let out = pinned(s.load_cpu.as_deref(), "wrk")
        .args(["-t1", &format!("-c{}", s.connections), &format!("-d{secs}s"), "--timeout", "10s", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk: {e} (make bench installs it)"));
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("WRK_JSON ")) else {
        panic!("wrk gave no result ({}):\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    };
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("wrk result {line:?}: {e}"));
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let duration_us = n("duration_us").max(1.0);
    Run {
        requests: n("requests") as u64,
        duration_us: duration_us as u64,
        rps: n("requests") / (duration_us / 1e6),
        p50_us: n("p50_us"),
        p90_us: n("p90_us"),
        p99_us: n("p99_us"),
        max_us: n("max_us"),
        errors: ["connect", "read", "write", "status", "timeout"].iter().map(|k| n(k) as u64).sum(),
    }
}

/// The 1-minute load average: other work on the machine skews every figure.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// One request of a scenario, outside wrk, to fail early and clearly when a listener refuses.
/// `auth`: its credential headers (`Authorization`, and `DPoP` for a proof).
///
/// For a POST, a GET with the same token goes first, so that the check is about the POST itself, not
/// about a first request that must wait for Mission Status.
pub fn precheck(
    sc: &Scenario,
    port: u16,
    auth: &[(&str, String)],
    bodies: &BTreeMap<usize, Vec<u8>>,
) -> Result<(), String> {
    let with_auth = |mut r: Req| {
        for (k, v) in auth {
            r = r.header(k, v.as_str());
        }
        r
    };
    if sc.body.is_some() {
        let _ = with_auth(Req::new("GET", GET_PATH).header("Host", HOST)).try_send(port);
    }
    let mut r = with_auth(
        Req::new(if sc.body.is_some() { "POST" } else { "GET" }, if sc.body.is_some() { POST_PATH } else { GET_PATH })
            .header("Host", HOST),
    );
    if let Some(size) = sc.body {
        r = r.header("Content-Type", "application/json").body(bodies.get(&size).unwrap().clone());
    }
    match r.try_send(port) {
        Ok(resp) if resp.status == 200 => Ok(()),
        Ok(resp) => Err(format!("{}: {} {}", sc.id, resp.status, resp.text())),
        // A listener that answers before the body is in closes the connection: wrk copes, we may not.
        Err(_) if sc.body.is_some() && matches!(sc.listener, "none" | "mg_post_nopdp") => Ok(()),
        Err(e) => Err(format!("{}: {e}", sc.id)),
    }
}

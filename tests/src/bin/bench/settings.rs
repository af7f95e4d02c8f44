//! Settings from the environment, and CPU pinning.

use missiongate_tests::repo_root;
use std::path::PathBuf;
use std::process::Command;

pub struct Settings {
    pub rounds: u32,
    pub duration: u32,
    pub warmup: u32,
    pub connections: u32,
    pub cold_tokens: usize,
    /// DPoP proofs minted for the DPoP scenario (each is used once).
    pub dpop_proofs: usize,
    pub starts: u32,
    pub revocations: usize,
    pub out: PathBuf,
    pub work: PathBuf,
    pub envoy_cpu: Option<String>,
    pub load_cpu: Option<String>,
    /// Envoy without a filter on a quiet host (req/s), and the fraction of it below which a run is
    /// unreliable.
    pub quiet_none_rps: f64,
    pub quiet_fraction: f64,
    /// Per-round ratios of a target spread more than this: the run is unreliable.
    pub max_spread: f64,
    /// Before the bench pinned itself.
    pub cores: usize,
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number"))
        }
        _ => default,
    }
}

impl Settings {
    pub fn from_env() -> Settings {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (envoy_cpu, load_cpu) = if cores >= 2 {
            (Some(env_or("BENCH_ENVOY_CPU", "0".to_owned())), Some(env_or("BENCH_LOAD_CPU", "1".to_owned())))
        } else {
            eprintln!("bench: only {cores} core(s): Envoy and the load are not pinned apart; the figures mean little");
            (None, None)
        };
        let out = std::env::var_os("BENCH_OUT").map_or_else(|| repo_root().join("bench/results"), PathBuf::from);
        let out = if out.is_absolute() { out } else { repo_root().join(out) };
        Settings {
            rounds: env_or("BENCH_ROUNDS", 5u32).max(1),
            duration: env_or("BENCH_DURATION", 5u32).max(1),
            warmup: env_or("BENCH_WARMUP", 2u32),
            connections: env_or("BENCH_CONNECTIONS", 8u32).max(1),
            cold_tokens: env_or("BENCH_COLD_TOKENS", 40_000usize).max(2),
            dpop_proofs: env_or("BENCH_DPOP_PROOFS", 200_000usize).max(2),
            quiet_none_rps: env_or("BENCH_QUIET_NONE_RPS", 45_000f64),
            quiet_fraction: env_or("BENCH_QUIET_FRACTION", 0.6f64),
            max_spread: env_or("BENCH_MAX_SPREAD", 0.15f64),
            starts: env_or("BENCH_STARTS", 3u32).max(1),
            revocations: env_or("BENCH_REVOCATIONS", 100usize),
            work: repo_root()
                .join("target/bench")
                .join(out.file_name().map_or("results".into(), |n| n.to_string_lossy().into_owned())),
            out,
            envoy_cpu,
            load_cpu,
            cores,
        }
    }
}

/// `program` under `taskset -c cpu` when pinning.
pub fn pinned(cpu: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

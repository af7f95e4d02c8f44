//! Figures: the rows (medians of the rounds, and the median of the per-round ratios to each
//! counterpart), the targets, and whether the run can be trusted at all.

use crate::load::{median, Run};
use crate::scenarios::{Scenario, Tok};
use crate::settings::Settings;
use std::collections::BTreeMap;

/// A ratio of one row to a counterpart, taken round by round (both were measured within seconds of
/// each other in every round), so that drift between rounds cancels out.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ratio {
    pub against: String,
    /// Median of the per-round req/s ratios.
    pub rps: f64,
    /// (max - min) / median of the per-round ratios.
    pub spread: f64,
    pub per_round: Vec<f64>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub id: String,
    pub title: String,
    pub listener: String,
    pub role: String,
    pub method: String,
    pub body_bytes: Option<usize>,
    pub tokens: String,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    /// (max - min) / median of the rounds' req/s.
    pub rps_spread: f64,
    pub baseline: Option<String>,
    /// Against the baseline: median of the per-round ratios.
    pub ratio_rps: Option<f64>,
    pub ratio_spread: Option<f64>,
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    /// Against the further counterparts.
    pub also: Vec<Ratio>,
    pub rounds: Vec<Run>,
}

impl Row {
    pub fn against(&self, id: &str) -> Option<&Ratio> {
        self.also.iter().find(|r| r.against == id)
    }
}

fn spread(v: &[f64]) -> f64 {
    let m = median(v.to_vec());
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    if m > 0.0 && !v.is_empty() {
        (hi - lo) / m
    } else {
        0.0
    }
}

/// Per-round ratios of `a` to `b` (the rounds where both measured something).
fn ratio(a: &[Run], b: &[Run], against: &str, of: impl Fn(&Run) -> f64) -> Option<Ratio> {
    let per_round: Vec<f64> =
        a.iter().zip(b).filter(|(x, y)| of(y) > 0.0 && of(x) > 0.0).map(|(x, y)| of(x) / of(y)).collect();
    (!per_round.is_empty()).then(|| Ratio {
        against: against.to_owned(),
        rps: median(per_round.clone()),
        spread: spread(&per_round),
        per_round,
    })
}

/// The rows of the report, in scenario order.
pub fn rows(s: &Settings, scs: &[Scenario], runs: &BTreeMap<&str, Vec<Run>>) -> Vec<Row> {
    let empty = Vec::new();
    let of = |id: &str| runs.get(id).unwrap_or(&empty);
    scs.iter()
        .map(|sc| {
            let rs = of(sc.id);
            let rps: Vec<f64> = rs.iter().map(|r| r.rps).collect();
            let base = sc.baseline.map(|b| (b, of(b)));
            let main = base.and_then(|(b, br)| ratio(rs, br, b, |r| r.rps));
            Row {
                id: sc.id.into(),
                title: sc.title.into(),
                listener: sc.listener.into(),
                role: sc.role.as_str().into(),
                method: if sc.body.is_some() { "POST".into() } else { "GET".into() },
                body_bytes: sc.body,
                tokens: match sc.tok {
                    Tok::Hot => "one token".into(),
                    Tok::Pool => format!("pool of {}", s.cold_tokens),
                    Tok::Dpop => format!("one DPoP-bound token, pool of {} proofs", s.dpop_proofs),
                },
                rps: median(rps.clone()),
                p50_us: median(rs.iter().map(|r| r.p50_us).collect()),
                p99_us: median(rs.iter().map(|r| r.p99_us).collect()),
                errors: rs.iter().map(|r| r.errors).sum(),
                rps_spread: spread(&rps),
                baseline: sc.baseline.map(str::to_owned),
                ratio_rps: main.as_ref().map(|r| r.rps),
                ratio_spread: main.as_ref().map(|r| r.spread),
                ratio_p50: base.and_then(|(b, br)| ratio(rs, br, b, |r| r.p50_us)).map(|r| r.rps),
                ratio_p99: base.and_then(|(b, br)| ratio(rs, br, b, |r| r.p99_us)).map(|r| r.rps),
                also: sc.also.iter().filter_map(|b| ratio(rs, of(b), b, |r| r.rps)).collect(),
                rounds: rs.clone(),
            }
        })
        .collect()
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub name: String,
    pub measured: Option<f64>,
    /// Spread of the per-round ratios behind `measured`, where it is a ratio.
    pub spread: Option<f64>,
    pub unit: String,
    pub threshold: f64,
    /// "ge" or "le" / "lt".
    pub op: String,
    pub pass: Option<bool>,
    pub detail: String,
}

pub fn target(name: &str, measured: Option<f64>, unit: &str, op: &str, threshold: f64, detail: String) -> Target {
    let pass = measured.map(|m| match op {
        "ge" => m >= threshold,
        "le" => m <= threshold,
        _ => m < threshold,
    });
    Target { name: name.into(), measured, spread: None, unit: unit.into(), threshold, op: op.into(), pass, detail }
}

/// A ratio target: `row` against `against` (its baseline or one of its further counterparts).
pub fn ratio_target(name: &str, rows: &[Row], row: &str, against: &str, threshold: f64) -> Target {
    let r = rows.iter().find(|r| r.id == row);
    let b = rows.iter().find(|r| r.id == against);
    let (measured, spread) = match r {
        Some(r) if r.baseline.as_deref() == Some(against) => (r.ratio_rps, r.ratio_spread),
        Some(r) => r.against(against).map_or((None, None), |x| (Some(x.rps), Some(x.spread))),
        None => (None, None),
    };
    let detail = match (r, b) {
        (Some(r), Some(b)) => format!(
            "{} vs {} req/s (medians); median of {} per-round ratios",
            fmt_int(r.rps),
            fmt_int(b.rps),
            r.rounds.len()
        ),
        _ => "a row is missing".into(),
    };
    Target { spread, ..target(name, measured, "x", "ge", threshold, detail) }
}

/// Whether the figures can be trusted, and if not, why.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    pub reliable: bool,
    pub reasons: Vec<String>,
}

/// A run is unreliable when Envoy without any filter is far below what it does on a quiet host (other
/// work was taking the cores), when a ratio target's per-round ratios disagree, or when there were too
/// few rounds to take a median of.
pub fn verdict(s: &Settings, rows: &[Row], targets: &[Target], load_at_start: f64) -> Verdict {
    let mut reasons = Vec::new();
    if s.rounds < 5 {
        reasons.push(format!("{} rounds (at least 5 are needed for a median that means something)", s.rounds));
    }
    if let Some(none) = rows.iter().find(|r| r.id == "get_none") {
        let floor = s.quiet_none_rps * s.quiet_fraction;
        if none.rps < floor {
            reasons.push(format!(
                "Envoy without a filter served {} req/s, below {:.0}% of its quiet-host figure of {} req/s \
                 (BENCH_QUIET_NONE_RPS): something else was using the cores",
                fmt_int(none.rps),
                s.quiet_fraction * 100.0,
                fmt_int(s.quiet_none_rps)
            ));
        }
    }
    for t in targets.iter().filter(|t| t.unit == "x") {
        if let Some(sp) = t.spread.filter(|sp| *sp > s.max_spread) {
            reasons.push(format!(
                "the per-round ratios of \"{}\" spread {:.0}% (more than {:.0}%, BENCH_MAX_SPREAD)",
                t.name,
                sp * 100.0,
                s.max_spread * 100.0
            ));
        }
    }
    if load_at_start > 1.5 {
        reasons.push(format!("the 1-minute load average was {load_at_start:.2} at the start (other work was running)"));
    }
    Verdict { reliable: reasons.is_empty(), reasons }
}

pub fn fmt_int(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

pub fn fmt_target(t: &Target) -> (String, String, String) {
    let m = match (t.measured, t.unit.as_str()) {
        (None, _) => "not measured".to_owned(),
        (Some(v), "x") => format!("{v:.2}x"),
        (Some(v), "ms") => format!("{v:.1} ms"),
        (Some(v), "MiB") => format!("{v:.1} MiB"),
        (Some(v), u) => format!("{v:.2} {u}"),
    };
    let op = match t.op.as_str() {
        "ge" => ">=",
        "le" => "<=",
        _ => "<",
    };
    let th = match t.unit.as_str() {
        "x" => format!("{op} {:.2}x", t.threshold),
        u => format!("{op} {} {u}", t.threshold),
    };
    let verdict = match t.pass {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "not measured",
    };
    (m, th, verdict.into())
}

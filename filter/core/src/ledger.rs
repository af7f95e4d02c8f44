//! One bucket of the bounded replay ledger the filter keeps in Envoy's shared data (the host
//! layer does the compare-and-swap; this is the pure update it applies).
//!
//! A bucket is text, one entry a line: `<expiry> <entry>`. An update prunes expired lines, detects
//! a replay, and refuses to grow past [`MAX_PER_BUCKET`] live entries.

/// Live entries a bucket may hold.
pub const MAX_PER_BUCKET: usize = 128;

/// What inserting `entry` (valid until `until`) into a bucket's text gives at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum Insert {
    /// The entry is already there: a replay.
    Seen,
    /// The bucket is full of live entries.
    Full,
    /// The new bucket text (expired entries pruned, the entry appended).
    Text(String),
}

/// Pure bucket update: prune expired lines, detect a replay, enforce the bound, append.
pub fn insert(bucket: &str, entry: &str, until: i64, now: i64) -> Insert {
    let mut kept = String::with_capacity(bucket.len().min(MAX_PER_BUCKET * 64) + 64);
    let mut live = 0usize;
    for line in bucket.lines() {
        let Some((exp, k)) = line.split_once(' ') else { continue };
        let exp: i64 = exp.parse().unwrap_or(0);
        if exp <= now {
            continue; // expired: prune
        }
        if k == entry {
            return Insert::Seen;
        }
        live += 1;
        if live > MAX_PER_BUCKET {
            continue; // never carry more than the bound (a bucket written by an older build)
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if live >= MAX_PER_BUCKET {
        return Insert::Full;
    }
    kept.push_str(&until.to_string());
    kept.push(' ');
    kept.push_str(entry);
    kept.push('\n');
    Insert::Text(kept)
}

/// Whether a bucket's text holds `entry`, live at `now` (a read that changes nothing: shadow mode).
pub fn contains(bucket: &str, entry: &str, now: i64) -> bool {
    bucket
        .lines()
        .any(|line| line.split_once(' ').is_some_and(|(exp, k)| k == entry && exp.parse::<i64>().unwrap_or(0) > now))
}

//! The budget of precomputed P-256 verification tables, shared by the inline keys `config` reads and
//! the fetched ones `keys` installs.

use missiongate_wire::jose::VerifyingKey;

/// Most P-256 keys of one issuer that get precomputed verification tables (about 2.7 ms and
/// 256 KiB each). The others verify on the slower table-free path, so a JWKS with many keys costs
/// bounded time and memory to install, at every refresh.
pub const MAX_TABLES_PER_ISSUER: usize = 8;

pub(crate) fn has_tables(k: &VerifyingKey) -> bool {
    matches!(k, VerifyingKey::P256(_, Some(_)))
}

/// Give tables to at most [`MAX_TABLES_PER_ISSUER`] P-256 keys: those in `keys` that already have
/// them keep them, then new ones in document order until the budget is spent.
pub fn within_table_budget(keys: Vec<(Option<String>, VerifyingKey)>) -> Vec<(Option<String>, VerifyingKey)> {
    let mut budget = MAX_TABLES_PER_ISSUER.saturating_sub(keys.iter().filter(|(_, k)| has_tables(k)).count());
    keys.into_iter()
        .map(|(kid, k)| match k {
            VerifyingKey::P256(_, None) if budget > 0 => {
                budget -= 1;
                (kid, k.precompute())
            }
            other => (kid, other),
        })
        .collect()
}

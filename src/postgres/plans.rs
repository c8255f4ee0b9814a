//! Statements the loader runs on every batch, parsed and planned once per backend.
//!
//! `SpiClient::select("…")` parses, analyses and plans its text at every call: for the few
//! statements of each batch (claiming message ids, the token key, the vault store, the check
//! for secrets in the catalog) that was about 5 % of the loading backend's CPU in a profile
//! (docs/performance.md, "kept plans").
//! A kept plan (`SPI_keepplan`) is a cached plan like a prepared statement's: PostgreSQL's plan
//! cache analyses and plans it again when something it uses changes (a table, a function, the
//! search_path), so it behaves as the text would.

use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    // Never freed: a few plans per backend, for its lifetime. (Leaked rather than dropped, so
    // that no SPI_freeplan() runs from a thread-local destructor while the backend exits.)
    static KEPT: RefCell<HashMap<&'static str, &'static OwnedPreparedStatement>> =
        RefCell::new(HashMap::new());
}

/// `sql` with argument types `args`, prepared the first time this backend runs it and kept for
/// the next. `mutating`: executed as by `SpiClient::update` (with a new snapshot that sees this
/// transaction's changes); otherwise as by `SpiClient::select`.
pub fn kept(
    client: &SpiClient<'_>,
    sql: &'static str,
    args: &[PgOid],
    mutating: bool,
) -> SpiResult<&'static OwnedPreparedStatement> {
    if let Some(p) = KEPT.with(|k| k.borrow().get(sql).copied()) {
        return Ok(p);
    }
    let prepared = if mutating {
        client.prepare_mut(sql, args)?
    } else {
        client.prepare(sql, args)?
    };
    let p: &'static OwnedPreparedStatement = Box::leak(Box::new(prepared.keep()));
    KEPT.with(|k| k.borrow_mut().insert(sql, p));
    Ok(p)
}

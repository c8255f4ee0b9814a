//! Statements the loader runs on every batch, parsed and planned once per backend.
//!
//! `SpiClient::select("…")` parses, analyses and plans its text at every call: for the few
//! statements of each batch (claiming message ids, the token key, the vault store, the check
//! for secrets in the catalog) that was about 5 % of the loading backend's CPU in a profile
//! (docs/performance.md, "kept plans"). [`select`] and [`update`] take the same arguments as
//! `SpiClient`'s, prepare the statement the first time (with the argument types of the values
//! passed, as the text path takes them) and keep the plan (`SPI_keepplan`) for the next call.
//! A kept plan is a cached plan like a prepared statement's: PostgreSQL analyses and plans it
//! again when a table or function it uses is altered or dropped, or when the search_path
//! differs. Unlike the text, it does not notice an object created later that would now win the
//! name lookup, nor repeat the checks made only while parsing (USAGE on a schema): these
//! statements name everything schema-qualified and run as the extension's functions do.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::Oid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;

type Key = (&'static str, Vec<Oid>, bool);

thread_local! {
    // Never freed: a few plans per backend, for its lifetime. (Leaked rather than dropped, so
    // that no SPI_freeplan() runs from a thread-local destructor while the backend exits.)
    static KEPT: RefCell<HashMap<Key, &'static OwnedPreparedStatement>> =
        RefCell::new(HashMap::new());
}

/// The kept plan of `sql` for arguments of these types, prepared now if it is not kept yet.
/// Keyed by the types and `mutating` too: a caller passing other types gets its own plan, never
/// one that would read its values as another type.
fn kept(
    client: &SpiClient<'_>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
    mutating: bool,
) -> SpiResult<&'static OwnedPreparedStatement> {
    let key: Key = (sql, args.iter().map(|a| a.oid()).collect(), mutating);
    if let Some(p) = KEPT.with(|k| k.borrow().get(&key).copied()) {
        return Ok(p);
    }
    let types: Vec<PgOid> = key.1.iter().map(|&o| PgOid::from(o)).collect();
    let prepared = if mutating {
        client.prepare_mut(sql, &types)?
    } else {
        client.prepare(sql, &types)?
    };
    let p: &'static OwnedPreparedStatement = Box::leak(Box::new(prepared.keep()));
    KEPT.with(|k| k.borrow_mut().insert(key, p));
    Ok(p)
}

/// `client.select(sql, limit, args)` through a kept plan.
pub fn select<'conn>(
    client: &SpiClient<'conn>,
    sql: &'static str,
    limit: Option<libc::c_long>,
    args: &[DatumWithOid<'_>],
) -> SpiResult<SpiTupleTable<'conn>> {
    let plan = kept(client, sql, args, false)?;
    client.select(plan, limit, args)
}

/// `client.update(sql, limit, args)` through a kept plan.
pub fn update<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    limit: Option<libc::c_long>,
    args: &[DatumWithOid<'_>],
) -> SpiResult<SpiTupleTable<'conn>> {
    let plan = kept(client, sql, args, true)?;
    client.update(plan, limit, args)
}

/// Whether this backend keeps a plan of `sql` (for tests).
#[cfg(any(test, feature = "pg_test"))]
pub fn is_kept(sql: &str) -> bool {
    KEPT.with(|k| k.borrow().keys().any(|key| key.0 == sql))
}

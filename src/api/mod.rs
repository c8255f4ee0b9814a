//! The SQL-facing layer: thin `#[pg_extern]` wrappers over the plain modules (`sqs`, `login`,
//! `mask`) and the Postgres glue (`crate::postgres`). Each returns `Result<T, ErrorReport>` and
//! converts errors with `?`.

// pgrx raises an `ErrorReport` with our SQLSTATE, detail and hint; it is large, and errors are
// the rare path, so its size in `Result` does not matter here.
#![allow(clippy::result_large_err)]

pub mod app_version;
pub mod loader;
pub mod masking;
pub mod sqs;

use crate::postgres::error::Error;
use crate::sqs::Message;
use pgrx::prelude::*;

fn timestamptz_from_epoch_ms(ms: i64) -> Option<TimestampWithTimeZone> {
    const PG_EPOCH_MS: i64 = 946_684_800_000;
    TimestampWithTimeZone::try_from((ms - PG_EPOCH_MS) * 1000).ok()
}

/// One row of sqs_pull() / sqs_loader.pull(): message_id, receipt_handle, body, sent_at,
/// receive_count.
type MessageRow = (
    String,
    String,
    String,
    Option<TimestampWithTimeZone>,
    Option<i32>,
);

fn message_row(m: Message) -> MessageRow {
    let sent = m.sent_timestamp_ms.and_then(timestamptz_from_epoch_ms);
    (
        m.message_id,
        m.receipt_handle,
        m.body,
        sent,
        m.receive_count,
    )
}

/// The elements of an array argument, refusing NULLs.
fn non_null(v: Vec<Option<String>>, what: &'static str) -> Result<Vec<String>, Error> {
    v.into_iter()
        .map(|x| x.ok_or(Error::NullValue(what)))
        .collect()
}

/// Declares the private schema `sqs_loader` (created by sql/00_schema.sql) to pgrx, so that
/// functions go there with `#[pg_extern(schema = "sqs_loader")]`: the one way this crate places
/// functions in it. Nothing else lives in this module.
#[pg_schema]
mod sqs_loader {}

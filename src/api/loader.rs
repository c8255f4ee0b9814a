//! What `load_user_logins()` calls: the loader's receive with prefetch, background deletes,
//! the message parser, and the library version. All in the private schema.

use super::sqs::warn_failures;
use super::{message_row, non_null, timestamptz_from_epoch_ms};
use crate::login;
use crate::postgres::batch;
use crate::postgres::token_array::TokenArray;
use crate::postgres::{guc, loader_state, run_slots, vault};
use crate::sqs::executor::ReceiveArgs;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// load_user_logins()'s receive: like sqs_pull(), but takes the batch it prefetched for this
/// same request and, with `prefetch`, starts receiving the next batch in the background. One
/// row of column arrays (empty when nothing came): what the loader passes on as arrays anyway.
#[allow(clippy::type_complexity)] // pgrx needs the name!() columns written out in the signature
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn pull(
    queue_url: &str,
    n: i32,
    visibility_timeout: Option<i32>,
    wait_seconds: i32,
    prefetch: bool,
) -> Result<
    TableIterator<
        'static,
        (
            name!(message_ids, Vec<String>),
            name!(receipt_handles, Vec<String>),
            name!(bodies, Vec<String>),
            name!(sent_ats, Vec<Option<TimestampWithTimeZone>>),
            name!(receive_counts, Vec<Option<i32>>),
        ),
    >,
    ErrorReport,
> {
    let args = ReceiveArgs::new(n, visibility_timeout, wait_seconds)?;
    let msgs = loader_state::pull_for_loader(queue_url, args, prefetch)?;
    let mut cols: (Vec<_>, Vec<_>, Vec<_>, Vec<_>, Vec<_>) = Default::default();
    for (id, handle, body, sent, count) in msgs.into_iter().map(message_row) {
        cols.0.push(id);
        cols.1.push(handle);
        cols.2.push(body);
        cols.3.push(sent);
        cols.4.push(count);
    }
    Ok(TableIterator::once(cols))
}

/// Make the messages of a pending prefetch visible again; how many.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn release_prefetched() -> Result<i32, ErrorReport> {
    Ok(loader_state::release_prefetched()? as i32)
}

/// Delete these messages in the background once the current transaction commits (never if it
/// aborts): load_user_logins() calls it for each batch it loads, so the next batch overlaps the
/// deletes.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn delete_after_commit(
    queue_url: &str,
    receipt_handles: Vec<Option<String>>,
) -> Result<(), ErrorReport> {
    let handles = non_null(receipt_handles, "receipt_handles")?;
    Ok(loader_state::delete_after_commit(queue_url, handles)?)
}

/// The batch being loaded failed (nothing of it committed): give its messages back now, and stop
/// keeping them invisible.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn batch_abandoned() {
    loader_state::batch_abandoned()
}

/// Whether this run may load a batch of the queue now (`sqs_loader.max_runs_per_queue`): it
/// holds one of the queue's slots or takes a free one, waiting up to `wait_ms` for one.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn run_slot(queue_url: &str, wait_ms: i32) -> bool {
    run_slots::take(
        queue_url,
        std::time::Duration::from_millis(wait_ms.max(0) as u64),
    )
}

/// Give up the queue slot this backend's run holds (the end of a run).
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn run_slot_release() {
    run_slots::release()
}

/// Check a queue URL the way a request would: its form, the allow-list, credentials stored where
/// every role reads them. Raises the error a request would raise.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn check_queue_url(queue_url: &str) -> Result<(), ErrorReport> {
    crate::postgres::sqs_client::for_queue(queue_url)?;
    Ok(())
}

/// Start this database's background-worker supervisor once the transaction commits.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn launch_supervisor() {
    crate::postgres::worker::launch_supervisor_after_commit()
}

/// Collect the background deletes that finished (all of them when `wait`): how many were
/// deleted. Failed entries are reported in a WARNING, a request-level failure as an ERROR.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn delete_collect(wait: bool) -> Result<i64, ErrorReport> {
    let out = loader_state::delete_collect(wait)?;
    warn_failures("background delete", &out);
    Ok(out.succeeded as i64)
}

/// The loader's settings, typed (what a run starts from).
#[allow(clippy::type_complexity)] // pgrx needs the name!() columns written out in the signature
#[pg_extern(stable, parallel_safe, schema = "sqs_loader")]
fn loader_settings() -> TableIterator<
    'static,
    (
        name!(queue_url, Option<String>),
        name!(batch_size, i32),
        name!(visibility_timeout, Option<i32>),
        name!(wait_seconds, i32),
        name!(max_seconds, i32),
        name!(max_messages, Option<i32>),
        name!(exit_when_empty, bool),
        name!(progress_seconds, i32),
        name!(dedup_retention_days, i32),
        name!(poison_receive_count, Option<i32>),
    ),
> {
    TableIterator::once((
        guc::queue_url(),
        guc::batch_size(),
        guc::visibility_timeout(),
        guc::wait_seconds(),
        guc::max_seconds(),
        guc::max_messages(),
        guc::exit_when_empty(),
        guc::progress_seconds(),
        guc::dedup_retention_days(),
        guc::poison_receive_count(),
    ))
}

/// The installed extension version (calling it also loads the library, defining the settings).
#[pg_extern(immutable, parallel_safe, schema = "sqs_loader")]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Validate and flatten one message body (unwrapping an SNS or EventBridge envelope): one row,
/// with reject_reason NULL when valid.
#[allow(clippy::type_complexity)] // pgrx needs the name!() columns written out in the signature
#[pg_extern(immutable, strict, parallel_safe, schema = "sqs_loader")]
fn parse_login(
    body: &str,
) -> TableIterator<
    'static,
    (
        name!(user_id, Option<String>),
        name!(device_type, Option<String>),
        name!(ip, Option<String>),
        name!(locale, Option<String>),
        name!(device_id, Option<String>),
        name!(app_version, Option<i32>),
        name!(reject_reason, Option<String>),
        name!(reject_detail, Option<String>),
        name!(envelope, Option<String>),
        name!(event_at, Option<TimestampWithTimeZone>),
    ),
> {
    TableIterator::once(login_columns(body))
}

/// What parse_login() returns for one body: user_id, device_type, ip, locale, device_id,
/// app_version, reject_reason, reject_detail, envelope, event_at.
type LoginColumns = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<TimestampWithTimeZone>,
);

fn login_columns(body: &str) -> LoginColumns {
    match login::parse_message(body) {
        Ok(login::Parsed { event: e, envelope }) => (
            Some(e.user_id),
            e.device_type,
            Some(e.ip),
            e.locale,
            Some(e.device_id),
            Some(e.app_version),
            None,
            None,
            envelope.as_ref().map(|v| v.kind.to_string()),
            envelope
                .and_then(|v| v.time_ms)
                .and_then(timestamptz_from_epoch_ms),
        ),
        Err(r) => (
            None,
            None,
            None,
            None,
            None,
            None,
            Some(r.reason.to_string()),
            Some(r.detail),
            None,
            None,
        ),
    }
}

/// Every rejection reason with its meaning.
#[pg_extern(immutable, parallel_safe, schema = "sqs_loader")]
fn reject_reasons() -> TableIterator<'static, (name!(reason, String), name!(meaning, String))> {
    TableIterator::new(
        login::REASONS
            .iter()
            .map(|(r, m)| (r.to_string(), m.to_string())),
    )
}

/// load_batch()'s first step in one call: the distinct messages of a batch (by message id),
/// each body parsed as parse_login() does; their ids claimed in processed_messages (a message
/// already recorded there is skipped); the IPs and device ids of the claimed valid ones masked
/// with one vault store. Returns column arrays, not rows: what load_batch() inserts from.
#[allow(clippy::type_complexity)] // pgrx needs the name!() columns written out in the signature
#[pg_extern(volatile, parallel_unsafe, security_definer, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn prepare_batch(
    run_id: Option<i64>,
    ids: Vec<Option<String>>,
    bodies: Vec<Option<String>>,
    sent: Vec<Option<TimestampWithTimeZone>>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(skipped, i32),
            name!(message_ids, Vec<String>),
            name!(user_ids, Vec<String>),
            name!(device_types, Vec<Option<String>>),
            name!(ips, TokenArray),
            name!(locales, Vec<Option<String>>),
            name!(device_ids, TokenArray),
            name!(app_versions, Vec<Option<i32>>),
            name!(sent_ats, Vec<Option<TimestampWithTimeZone>>),
            name!(event_ats, Vec<Option<TimestampWithTimeZone>>),
            name!(rejected_ids, Vec<String>),
            name!(rejected_sent_ats, Vec<Option<TimestampWithTimeZone>>),
            name!(reject_reasons, Vec<String>),
            name!(reject_details, Vec<Option<String>>),
            name!(rejected_bodies, Vec<Option<String>>),
        ),
    >,
    ErrorReport,
> {
    let received = ids.len();
    let mut msgs: Vec<(String, Option<TimestampWithTimeZone>, Option<String>)> = ids
        .into_iter()
        .zip(bodies)
        .zip(sent)
        .filter_map(|((id, body), sent)| id.map(|id| (id, sent, body)))
        .collect();
    // SQS may deliver one message twice in a batch: once is enough. Sorted, so concurrent
    // loaders take the claims' row locks in the same order.
    msgs.sort_by(|a, b| a.0.cmp(&b.0));
    msgs.dedup_by(|a, b| a.0 == b.0);
    // A message without a body (SQS never sends one) is rejected as an empty one would be.
    let parsed: Vec<Result<login::Parsed, login::Rejection>> = msgs
        .iter()
        .map(|(_, _, body)| login::parse_message(body.as_deref().unwrap_or_default()))
        .collect();
    let claimed = batch::claim(run_id, &msgs, &parsed)?;
    let skipped = (received - claimed.iter().filter(|c| **c).count()) as i32;
    let (mut ids, mut user_ids, mut device_types, mut locales, mut versions) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut sent_ats, mut event_ats, mut values, mut devices) = (vec![], vec![], vec![], vec![]);
    let (mut rej_ids, mut rej_sent, mut reasons, mut details, mut rej_bodies) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (((id, sent, body), p), claimed) in msgs.into_iter().zip(parsed).zip(claimed) {
        if !claimed {
            continue;
        }
        match p {
            Ok(login::Parsed { event: e, envelope }) => {
                ids.push(id);
                user_ids.push(e.user_id);
                device_types.push(e.device_type);
                values.push(e.ip);
                locales.push(e.locale);
                devices.push(e.device_id);
                versions.push(Some(e.app_version));
                sent_ats.push(sent);
                event_ats.push(
                    envelope
                        .and_then(|v| v.time_ms)
                        .and_then(timestamptz_from_epoch_ms),
                );
            }
            Err(r) => {
                rej_ids.push(id);
                rej_sent.push(sent);
                reasons.push(r.reason.to_string());
                details.push(Some(r.detail));
                rej_bodies.push(body);
            }
        }
    }
    // The IPs, then the device ids: one vault store for both.
    let n = values.len();
    values.append(&mut devices);
    let mut ips = vault::mask_values(values.iter().map(|v| Some(v.as_str())), vault::Store::Vault)?;
    let device_ids = ips.split_off(n);
    Ok(TableIterator::once((
        skipped,
        ids,
        user_ids,
        device_types,
        TokenArray(ips),
        locales,
        TokenArray(device_ids),
        versions,
        sent_ats,
        event_ats,
        rej_ids,
        rej_sent,
        reasons,
        details,
        rej_bodies,
    )))
}

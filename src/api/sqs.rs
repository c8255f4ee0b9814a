//! The `sqs_*` functions: SQS from SQL.

use super::{message_row, non_null};
use crate::postgres::loader_state::{self, off_thread};
use crate::postgres::sqs_client;
use crate::sqs::executor::{BatchOutcome, ReceiveArgs};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::collections::BTreeMap;

/// Receive up to `n` messages (parallel ReceiveMessage calls of ≤ 10).
#[allow(clippy::type_complexity)] // pgrx needs the name!() columns written out in the signature
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn sqs_pull(
    queue_url: &str,
    n: default!(i32, 10),
    visibility_timeout: default!(Option<i32>, "NULL"),
    wait_seconds: default!(i32, 0),
) -> Result<
    TableIterator<
        'static,
        (
            name!(message_id, String),
            name!(receipt_handle, String),
            name!(body, String),
            name!(sent_at, Option<TimestampWithTimeZone>),
            name!(receive_count, Option<i32>),
        ),
    >,
    ErrorReport,
> {
    let args = ReceiveArgs::new(n, visibility_timeout, wait_seconds)?;
    let msgs = loader_state::pull(queue_url, args)?;
    Ok(TableIterator::new(msgs.into_iter().map(message_row)))
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Name the failed entries of a batch call in one WARNING.
pub(super) fn warn_failures(what: &str, out: &BatchOutcome) {
    if out.failed.is_empty() {
        return;
    }
    let total = out.succeeded + out.failed.len();
    let list: Vec<String> = out
        .failed
        .iter()
        .take(20)
        .map(|(f, item)| {
            format!(
                "{} ({}): {} [{}]",
                f.code,
                f.message,
                shorten(item, 24),
                if f.sender_fault { "sender" } else { "service" }
            )
        })
        .collect();
    let more = if out.failed.len() > 20 {
        format!("; and {} more", out.failed.len() - 20)
    } else {
        String::new()
    };
    pgrx::warning!(
        "{what}: {} of {total} entries failed: {}{more}",
        out.failed.len(),
        list.join("; ")
    );
}

/// DeleteMessageBatch in parallel chunks of 10; returns how many were deleted. Failed entries
/// are reported in a WARNING.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn sqs_delete(queue_url: &str, receipt_handles: Vec<Option<String>>) -> Result<i32, ErrorReport> {
    let handles = non_null(receipt_handles, "receipt_handles")?;
    let client = sqs_client::for_queue(queue_url)?;
    let url = queue_url.to_string();
    let out = off_thread(client, move |c| c.delete(&url, &handles))?;
    warn_failures("sqs_delete", &out);
    Ok(out.succeeded as i32)
}

/// SendMessageBatch in parallel chunks (≤ 10 entries, ≤ 256 KiB); returns how many were sent.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn sqs_send(queue_url: &str, bodies: Vec<Option<String>>) -> Result<i32, ErrorReport> {
    send(queue_url, bodies, None)
}

/// The same to a FIFO queue (or with a message group on a standard queue): every message in
/// `message_group_id`, in the order of `bodies`, each with a deduplication id of its own.
/// (An overload rather than a new default argument, so grants on sqs_send(text, text[]) made
/// before 0.2.0 stay as they are.)
#[pg_extern(name = "sqs_send", volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn sqs_send_to_group(
    queue_url: &str,
    bodies: Vec<Option<String>>,
    message_group_id: &str,
) -> Result<i32, ErrorReport> {
    send(queue_url, bodies, Some(message_group_id.to_string()))
}

fn send(
    queue_url: &str,
    bodies: Vec<Option<String>>,
    group: Option<String>,
) -> Result<i32, ErrorReport> {
    let bodies = non_null(bodies, "bodies")?;
    let client = sqs_client::for_queue(queue_url)?;
    let url = queue_url.to_string();
    let out = off_thread(client, move |c| c.send(&url, &bodies, group.as_deref()))?;
    warn_failures("sqs_send", &out);
    Ok(out.succeeded as i32)
}

/// CreateQueue (idempotent); returns the queue URL.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn sqs_create_queue(
    name: &str,
    attributes: default!(Option<JsonB>, "NULL"),
) -> Result<String, ErrorReport> {
    let mut attrs = BTreeMap::new();
    if let Some(JsonB(v)) = attributes {
        let Some(obj) = v.as_object() else {
            return Err(crate::postgres::error::Error::InvalidArgument(
                "attributes must be a JSON object such as {\"VisibilityTimeout\": \"60\"}".into(),
            )
            .into());
        };
        for (k, v) in obj {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            attrs.insert(k.clone(), text);
        }
    }
    let client = sqs_client::for_service()?;
    let name = name.to_string();
    Ok(off_thread(client, move |c| c.create_queue(&name, attrs))?)
}

/// GetQueueAttributes (All) as jsonb; numeric attributes become JSON numbers.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn sqs_queue_attributes(queue_url: &str) -> Result<JsonB, ErrorReport> {
    let client = sqs_client::for_queue(queue_url)?;
    let url = queue_url.to_string();
    let attrs = off_thread(client, move |c| c.attributes(&url))?;
    let obj: serde_json::Map<String, serde_json::Value> = attrs
        .into_iter()
        .map(|(k, v)| {
            let val = v
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::String(v));
            (k, val)
        })
        .collect();
    Ok(JsonB(serde_json::Value::Object(obj)))
}

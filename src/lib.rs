//! sqs_loader: pull login events from Amazon SQS inside PostgreSQL, mask their PII, load them
//! exactly once.
//!
//! This file is the SQL-facing layer: thin `#[pg_extern]` wrappers over plain modules
//! (`sqs`, `login`, `mask`), the Postgres glue (`client`, `vault`, `audit`, `backend`), and
//! the SQL files of `sql/` in dependency order. Orchestration, tables and grants are SQL.

use pgrx::prelude::*;
use pgrx::JsonB;

::pgrx::pg_module_magic!(name, version);

mod audit;
mod backend;
mod client;
mod error;
mod guc;
pub mod login;
pub mod mask;
pub mod sqs;
mod vault;

extension_sql_file!("../sql/00_schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../sql/10_masking.sql",
    name = "masking",
    requires = [
        "schema",
        sqs_loader::new_token_key,
        sqs_loader::token_key_id,
        sqs_loader::rsa_key_info,
        sqs_loader::unseal,
        sqs_loader::rewrap,
        sqs_loader::private_key_fingerprint,
        sqs_loader::audit_unmask
    ]
);
extension_sql_file!(
    "../sql/20_loader.sql",
    name = "loader",
    requires = [
        "masking",
        pull,
        release_prefetched,
        sqs_delete,
        delete_async,
        delete_collect,
        sqs_queue_attributes,
        mask_values,
        sqs_loader::parse_login,
        sqs_loader::version
    ]
);
extension_sql_file!("../sql/90_privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
}

fn or_raise<T>(r: Result<T, sqs::SqsError>) -> T {
    r.unwrap_or_else(|e| error::sqs(e))
}

fn timestamptz_from_epoch_ms(ms: i64) -> Option<TimestampWithTimeZone> {
    const PG_EPOCH_MS: i64 = 946_684_800_000;
    TimestampWithTimeZone::try_from((ms - PG_EPOCH_MS) * 1000).ok()
}

/// One row of sqs_pull() / sqs_loader.pull().
type MessageRow = (
    String,
    String,
    String,
    Option<TimestampWithTimeZone>,
    Option<i32>,
);

fn message_row(m: sqs::Message) -> MessageRow {
    let sent = m.sent_timestamp_ms.and_then(timestamptz_from_epoch_ms);
    (
        m.message_id,
        m.receipt_handle,
        m.body,
        sent,
        m.receive_count,
    )
}

// ---------------------------------------------------------------- SQS

/// Receive up to `n` messages (parallel ReceiveMessage calls of ≤ 10).
#[allow(clippy::type_complexity)] // pgrx needs the name!() columns written out in the signature
#[pg_extern(volatile, parallel_unsafe)]
fn sqs_pull(
    queue_url: &str,
    n: default!(i32, 10),
    visibility_timeout: default!(Option<i32>, "NULL"),
    wait_seconds: default!(i32, 0),
) -> TableIterator<
    'static,
    (
        name!(message_id, String),
        name!(receipt_handle, String),
        name!(body, String),
        name!(sent_at, Option<TimestampWithTimeZone>),
        name!(receive_count, Option<i32>),
    ),
> {
    let msgs = or_raise(client::pull(queue_url, n, visibility_timeout, wait_seconds));
    TableIterator::new(msgs.into_iter().map(message_row))
}

/// load_user_logins()'s receive: like sqs_pull(), but takes the batch it prefetched for this same
/// request and, with `prefetch`, starts receiving the next batch in the background.
#[allow(clippy::type_complexity)] // pgrx needs the name!() columns written out in the signature
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn pull(
    queue_url: &str,
    n: i32,
    visibility_timeout: Option<i32>,
    wait_seconds: i32,
    prefetch: bool,
) -> TableIterator<
    'static,
    (
        name!(message_id, String),
        name!(receipt_handle, String),
        name!(body, String),
        name!(sent_at, Option<TimestampWithTimeZone>),
        name!(receive_count, Option<i32>),
    ),
> {
    let msgs = or_raise(client::pull_for_loader(
        queue_url,
        n,
        visibility_timeout,
        wait_seconds,
        prefetch,
    ));
    TableIterator::new(msgs.into_iter().map(message_row))
}

/// Make the messages of a pending prefetch visible again; how many.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn release_prefetched() -> i32 {
    or_raise(client::release_prefetched()) as i32
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn warn_failures(what: &str, total: usize, failed: &[(sqs::BatchFailure, String)]) {
    if failed.is_empty() {
        return;
    }
    let list: Vec<String> = failed
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
    let more = if failed.len() > 20 {
        format!("; and {} more", failed.len() - 20)
    } else {
        String::new()
    };
    pgrx::warning!(
        "{what}: {} of {total} entries failed: {}{more}",
        failed.len(),
        list.join("; ")
    );
}

fn non_null(v: Vec<Option<String>>, what: &str) -> Vec<String> {
    v.into_iter()
        .map(|x| {
            x.unwrap_or_else(|| {
                error::raise(
                    PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                    format!("{what} must not contain NULL"),
                    None,
                    None,
                )
            })
        })
        .collect()
}

/// DeleteMessageBatch in parallel chunks of 10; returns how many were deleted. Failed entries
/// are reported in a WARNING.
#[pg_extern(volatile, parallel_unsafe)]
fn sqs_delete(queue_url: &str, receipt_handles: Vec<Option<String>>) -> i32 {
    let handles = non_null(receipt_handles, "receipt_handles");
    let total = handles.len();
    let out = or_raise(client::delete(queue_url, handles));
    warn_failures("sqs_delete", total, &out.failed);
    out.succeeded as i32
}

/// Start deleting messages in the background and return at once (load_user_logins() calls it
/// after each COMMIT, so the next batch overlaps the deletes).
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn delete_async(queue_url: &str, receipt_handles: Vec<Option<String>>) {
    or_raise(client::delete_async(
        queue_url,
        non_null(receipt_handles, "receipt_handles"),
    ))
}

/// Collect the background deletes that finished (all of them when `wait`): how many were
/// deleted. Failed entries are reported in a WARNING, a request-level failure as an ERROR.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn delete_collect(wait: bool) -> i64 {
    let out = or_raise(client::delete_collect(wait));
    warn_failures(
        "background delete",
        out.succeeded + out.failed.len(),
        &out.failed,
    );
    out.succeeded as i64
}

/// SendMessageBatch in parallel chunks (≤ 10 entries, ≤ 256 KiB); returns how many were sent.
#[pg_extern(volatile, parallel_unsafe)]
fn sqs_send(queue_url: &str, bodies: Vec<Option<String>>) -> i32 {
    let bodies = non_null(bodies, "bodies");
    let total = bodies.len();
    let out = or_raise(client::send(queue_url, bodies));
    warn_failures("sqs_send", total, &out.failed);
    out.succeeded as i32
}

/// CreateQueue (idempotent); returns the queue URL.
#[pg_extern(volatile, parallel_unsafe)]
fn sqs_create_queue(name: &str, attributes: default!(Option<JsonB>, "NULL")) -> String {
    let mut attrs = std::collections::BTreeMap::new();
    if let Some(JsonB(v)) = attributes {
        let obj = v.as_object().cloned().unwrap_or_else(|| {
            error::raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "attributes must be a JSON object such as {\"VisibilityTimeout\": \"60\"}".into(),
                None,
                None,
            )
        });
        for (k, v) in obj {
            attrs.insert(
                k,
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
    }
    or_raise(client::create_queue(name, attrs))
}

/// GetQueueAttributes (All) as jsonb; numeric attributes become JSON numbers.
#[pg_extern(volatile, parallel_unsafe)]
fn sqs_queue_attributes(queue_url: &str) -> JsonB {
    let attrs = or_raise(client::attributes(queue_url));
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
    JsonB(serde_json::Value::Object(obj))
}

// ---------------------------------------------------------------- masking

/// Token of one value (and its vault entry). For ad-hoc SQL; the loader uses mask_pii_batch.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn mask_pii(value: Option<String>) -> Option<String> {
    vault::mask_values(&[value]).pop().flatten()
}

/// Tokens of many values, aligned with them (NULL stays NULL), with one vault upsert: the
/// loader's path (one call per batch, no per-row function calls).
#[pg_extern(volatile, parallel_unsafe, security_definer, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn mask_values(values: Vec<Option<String>>) -> Vec<Option<String>> {
    vault::mask_values(&values)
}

/// Tokens of many values with one vault upsert: one row per distinct non-null value.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn mask_pii_batch(
    values: Vec<Option<String>>,
) -> TableIterator<'static, (name!(value, String), name!(token, String))> {
    TableIterator::new(vault::mask_pairs(&values))
}

// ---------------------------------------------------------------- app_version

/// "major[.minor[.patch]]" → major × 1,000,000 + minor × 1,000 + patch.
#[pg_extern(immutable, strict, parallel_safe)]
fn app_version_int(version: &str) -> i32 {
    login::app_version_to_int(version).unwrap_or_else(|r| {
        error::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            r.detail,
            Some(format!("reason: {}", r.reason)),
            None,
        )
    })
}

/// The canonical "major.minor.patch" of a packed app_version.
#[pg_extern(immutable, strict, parallel_safe)]
fn app_version_text(version: i32) -> String {
    login::app_version_text(version).unwrap_or_else(|| {
        error::raise(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!("{version} is not a packed app_version (0 to 2146999999)"),
            None,
            None,
        )
    })
}

#[pg_schema]
mod sqs_loader {
    use super::*;
    use crate::mask;

    /// The installed extension version (calling it also loads the library, defining the settings).
    #[pg_extern(immutable, parallel_safe)]
    fn version() -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// Validate and flatten one message body: one row, with reject_reason NULL when valid.
    #[allow(clippy::type_complexity)] // pgrx needs the name!() columns written out in the signature
    #[pg_extern(immutable, strict, parallel_safe)]
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
        ),
    > {
        TableIterator::once(match login::parse(body) {
            Ok(e) => (
                Some(e.user_id),
                e.device_type,
                Some(e.ip),
                e.locale,
                Some(e.device_id),
                Some(e.app_version),
                None,
                None,
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
            ),
        })
    }

    /// Every rejection reason with its meaning.
    #[pg_extern(immutable, parallel_safe)]
    fn reject_reasons() -> TableIterator<'static, (name!(reason, String), name!(meaning, String))> {
        TableIterator::new(
            login::REASONS
                .iter()
                .map(|(r, m)| (r.to_string(), m.to_string())),
        )
    }

    /// 32 random bytes from the OS CSPRNG: a new token key.
    #[pg_extern(volatile)]
    fn new_token_key() -> Vec<u8> {
        mask::new_key().to_vec()
    }

    /// The public identifier of a token key.
    #[pg_extern(immutable, strict)]
    fn token_key_id(key: &[u8]) -> String {
        mask::TokenKey::from_bytes(key)
            .unwrap_or_else(|e| error::mask(e))
            .id()
    }

    /// Validate an RSA public key: its SHA-256 fingerprint, normalised PEM and size in bits.
    #[pg_extern(immutable, strict)]
    fn rsa_key_info(
        public_key: &str,
    ) -> TableIterator<
        'static,
        (
            name!(fingerprint, String),
            name!(pem, String),
            name!(bits, i32),
        ),
    > {
        let k = mask::parse_public_key(public_key).unwrap_or_else(|e| error::mask(e));
        use rsa::traits::PublicKeyParts;
        TableIterator::once((
            mask::fingerprint(&k),
            mask::public_key_pem(&k),
            (k.size() * 8) as i32,
        ))
    }

    /// Parsing a private key (and decrypting an encrypted one) is slow: keep the last one.
    fn private_key(pem: &str, passphrase: Option<&str>) -> std::rc::Rc<rsa::PrivateKey> {
        use sha2::{Digest, Sha256};
        thread_local! {
            static LAST: std::cell::RefCell<Option<([u8; 32], std::rc::Rc<rsa::PrivateKey>)>> =
                const { std::cell::RefCell::new(None) };
        }
        let mut h = Sha256::new();
        h.update(pem.as_bytes());
        h.update([0u8]);
        h.update(passphrase.unwrap_or("").as_bytes());
        h.update([passphrase.is_some() as u8]);
        let digest: [u8; 32] = h.finalize().into();
        if let Some(k) = LAST.with(|l| {
            l.borrow()
                .as_ref()
                .filter(|(d, _)| *d == digest)
                .map(|(_, k)| k.clone())
        }) {
            return k;
        }
        let k = std::rc::Rc::new(
            mask::parse_private_key(pem, passphrase).unwrap_or_else(|e| error::mask(e)),
        );
        LAST.with(|l| *l.borrow_mut() = Some((digest, k.clone())));
        k
    }

    /// Fingerprint of the public half of a private key.
    #[pg_extern(volatile)]
    fn private_key_fingerprint(private_key: &str, passphrase: Option<&str>) -> String {
        mask::fingerprint(&self::private_key(private_key, passphrase).to_public_key())
    }

    /// Decrypt one vault entry with the RSA private key.
    #[pg_extern(volatile)]
    fn unseal(
        token: &str,
        sealed: &[u8],
        wrapped_key: &[u8],
        private_key: &str,
        passphrase: Option<&str>,
    ) -> String {
        let private = self::private_key(private_key, passphrase);
        let dk = mask::unwrap(&private, wrapped_key).unwrap_or_else(|e| error::mask(e));
        let plain = mask::open(&dk, token, sealed).unwrap_or_else(|e| error::mask(e));
        String::from_utf8(plain).unwrap_or_else(|_| {
            error::mask(mask::MaskError::Corrupt("the value is not UTF-8".into()))
        })
    }

    /// Re-wrap a data key: unwrap with the old private key, wrap under the new public key.
    #[pg_extern(volatile)]
    fn rewrap(
        wrapped_key: &[u8],
        old_private_key: &str,
        passphrase: Option<&str>,
        new_public_key: &str,
    ) -> Vec<u8> {
        let old = self::private_key(old_private_key, passphrase);
        let new = mask::parse_public_key(new_public_key).unwrap_or_else(|e| error::mask(e));
        let dk = mask::unwrap(&old, wrapped_key).unwrap_or_else(|e| error::mask(e));
        mask::wrap(&new, &dk)
    }

    /// Write an unmask audit row in its own committed transaction (background worker).
    #[pg_extern(volatile)]
    fn audit_unmask(token: Option<&str>, outcome: &str) {
        crate::audit::record(token, outcome)
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    include!("pg_tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let localstack = std::env::var("SQS_LOADER_TEST_LOCALSTACK")
            .unwrap_or_else(|_| "http://127.0.0.1:4566".into());
        vec![
            "shared_preload_libraries='pg_cron'",
            "cron.database_name='pgrx_tests'",
            "max_worker_processes=16",
            Box::leak(format!("sqs_loader_test.localstack='{localstack}'").into_boxed_str()),
        ]
    }
}

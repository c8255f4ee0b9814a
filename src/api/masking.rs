//! Masking from SQL: tokens (with the vault for the loader, lookups for everyone else), the
//! guards of the functions that take secrets, and the key operations that the SQL functions of
//! sql/10_masking.sql build on.

use crate::mask;
use crate::postgres::audit::{self, Action, Entry};
use crate::postgres::error::Error;
use crate::postgres::log_guard;
use crate::postgres::token_array::TokenArray;
use crate::postgres::vault::{self, Store};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use rsa::traits::PublicKeyParts;
use std::cell::RefCell;
use std::collections::HashSet;

thread_local! {
    /// Values mask_pii() already looked up (and audited) in the current statement, keyed by the
    /// statement's start time: `WHERE masked_ip = mask_pii('…')` calls it once per row.
    static LOOKED_UP: RefCell<(i64, HashSet<String>)> = RefCell::new((0, HashSet::new()));
}

/// Token of one value, for looking values up (`WHERE masked_ip = mask_pii('203.0.113.7')`).
/// Stores nothing; every distinct value looked up is audited (action mask), in a transaction
/// of its own: a token is a way to test a guess, so guesses leave a trace even after ROLLBACK.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn mask_pii(value: Option<String>) -> Result<Option<String>, ErrorReport> {
    let Some(v) = value else { return Ok(None) };
    let token = vault::mask_values([Some(v.as_str())], Store::TokensOnly)?
        .pop()
        .flatten()
        .map(|t| t.as_str().to_string());
    // SAFETY: a plain read of the statement's start time.
    let statement = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
    let first = LOOKED_UP.with(|l| {
        let mut l = l.borrow_mut();
        if l.0 != statement {
            *l = (statement, HashSet::new());
        }
        l.1.insert(v)
    });
    if first {
        audit::record(
            Action::Mask,
            vec![Entry {
                token: token.clone(),
                outcome: "looked_up".into(),
                value_count: Some(1),
            }],
        )?;
    }
    Ok(token)
}

/// Tokens of many values, aligned with them (NULL stays NULL), with one vault store: the
/// masking prepare_batch() does, as one SQL call on an array (internal; what the masking
/// benchmark measures).
#[pg_extern(volatile, parallel_unsafe, security_definer, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn mask_values(values: Array<'_, &str>) -> Result<TokenArray, ErrorReport> {
    Ok(TokenArray(vault::mask_values(values.iter(), Store::Vault)?))
}

/// Tokens of many values (one row per distinct non-null value), for lookups; stores nothing,
/// and the call is audited (action mask, with the number of values).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn mask_pii_batch(
    values: Array<'_, &str>,
) -> Result<TableIterator<'static, (name!(value, String), name!(token, String))>, ErrorReport> {
    let pairs = vault::mask_pairs(values.iter())?;
    audit::record(
        Action::Mask,
        vec![Entry {
            token: None,
            outcome: "looked_up".into(),
            value_count: Some(pairs.len() as i32),
        }],
    )?;
    Ok(TableIterator::new(pairs))
}

// ---------------------------------------------------------------- guards

/// First thing a function that takes a secret does: mask private keys and these literal
/// secrets in the running statement (its text, its pg_stat_activity entry) and in every later
/// log line of the session. NULLs are skipped.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn protect_statement(secrets: Vec<Option<String>>) {
    let secrets: Vec<String> = secrets.into_iter().flatten().collect();
    let refs: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    log_guard::protect_statement(&refs);
}

/// Refuse (42501) unless the calling role — the one that called the SECURITY DEFINER function,
/// after SET ROLE — is a superuser (`role` = 'superuser') or has the privileges of `role`.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn require_caller(what: &str, role: &str) -> Result<(), ErrorReport> {
    // SAFETY: plain catalog lookups for the outer user.
    let allowed = unsafe {
        let caller = pg_sys::GetOuterUserId();
        if role == "superuser" {
            pg_sys::superuser_arg(caller)
        } else {
            let name = std::ffi::CString::new(role)
                .map_err(|_| Error::InvalidArgument("role name with NUL".into()))?;
            let oid = pg_sys::get_role_oid(name.as_ptr(), true);
            oid != pg_sys::InvalidOid && pg_sys::has_privs_of_role(caller, oid)
        }
    };
    if allowed {
        return Ok(());
    }
    let need = if role == "superuser" {
        "a superuser".to_string()
    } else {
        format!("a member of {role}")
    };
    Err(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("permission denied: {what} is for {need}"),
        "sqs_loader",
    )
    .set_hint(if role == "superuser" {
        "Ask a superuser.".to_string()
    } else {
        format!(
            "A superuser can GRANT {role} TO the role that recovers values; see docs/security.md."
        )
    }))
}

/// Refuse (55000) unless the library is in shared_preload_libraries, so that every session
/// masks keys in the log.
#[pg_extern(volatile, parallel_unsafe, schema = "sqs_loader")]
fn require_preloaded(what: &str) -> Result<(), ErrorReport> {
    Ok(log_guard::require_preloaded(what)?)
}

/// 32 random bytes from the OS CSPRNG: a new token key.
#[pg_extern(volatile, schema = "sqs_loader")]
fn new_token_key() -> Vec<u8> {
    mask::new_key().to_vec()
}

/// The public identifier of a token key.
#[pg_extern(immutable, strict, schema = "sqs_loader")]
fn token_key_id(key: &[u8]) -> Result<String, ErrorReport> {
    Ok(mask::TokenKey::from_bytes(key)?.id())
}

/// Validate an RSA public key: its SHA-256 fingerprint, normalised PEM and size in bits.
#[pg_extern(immutable, strict, schema = "sqs_loader")]
fn rsa_key_info(
    public_key: &str,
) -> Result<
    TableIterator<
        'static,
        (
            name!(fingerprint, String),
            name!(pem, String),
            name!(bits, i32),
        ),
    >,
    ErrorReport,
> {
    let k = mask::parse_public_key(public_key)?;
    Ok(TableIterator::once((
        mask::fingerprint(&k),
        mask::public_key_pem(&k),
        (k.size() * 8) as i32,
    )))
}

/// Fingerprint of the public half of a private key.
#[pg_extern(volatile, schema = "sqs_loader")]
fn private_key_fingerprint(
    private_key: &str,
    passphrase: Option<&str>,
) -> Result<String, ErrorReport> {
    Ok(mask::fingerprint(
        &vault::private_key(private_key, passphrase)?.to_public_key(),
    ))
}

/// Decrypt one vault entry with the RSA private key.
#[pg_extern(volatile, schema = "sqs_loader")]
fn unseal(
    token: &str,
    sealed: &[u8],
    wrapped_key: &[u8],
    private_key: &str,
    passphrase: Option<&str>,
) -> Result<String, ErrorReport> {
    let private = vault::private_key(private_key, passphrase)?;
    let dk = mask::unwrap(&private, wrapped_key)?;
    let plain = mask::open(&dk, token, sealed)?;
    Ok(String::from_utf8(plain)
        .map_err(|_| mask::MaskError::Corrupt("the value is not UTF-8".into()))?)
}

/// Re-wrap a data key: unwrap with the old private key, wrap under the new public key.
#[pg_extern(volatile, schema = "sqs_loader")]
fn rewrap(
    wrapped_key: &[u8],
    old_private_key: &str,
    passphrase: Option<&str>,
    new_public_key: &str,
) -> Result<Vec<u8>, ErrorReport> {
    let old = vault::private_key(old_private_key, passphrase)?;
    let new = mask::parse_public_key(new_public_key)?;
    let dk = mask::unwrap(&old, wrapped_key)?;
    Ok(mask::wrap(&new, &dk))
}

/// Write audit rows (one per token, aligned with its outcome) in their own committed
/// transaction (background worker); returns once they are committed.
#[pg_extern(volatile, schema = "sqs_loader")]
fn audit_access(
    action: &str,
    tokens: Vec<Option<String>>,
    outcomes: Vec<Option<String>>,
) -> Result<(), ErrorReport> {
    let action = Action::parse(action)
        .ok_or_else(|| Error::InvalidArgument(format!("unknown audit action {action}")))?;
    if tokens.len() != outcomes.len() {
        return Err(Error::InvalidArgument("tokens and outcomes differ in length".into()).into());
    }
    let entries = tokens
        .into_iter()
        .zip(outcomes)
        .map(|(token, outcome)| Entry {
            token,
            outcome: outcome.unwrap_or_else(|| "unknown".into()),
            value_count: None,
        })
        .collect();
    Ok(audit::record(action, entries)?)
}

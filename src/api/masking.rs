//! Masking from SQL: tokens (with the vault), and the key operations that the SQL functions of
//! sql/10_masking.sql build on.

use crate::mask;
use crate::postgres::{audit, vault};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use rsa::traits::PublicKeyParts;

/// Token of one value (and its vault entry). For ad-hoc SQL; the loader uses mask_values.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn mask_pii(value: Option<String>) -> Result<Option<String>, ErrorReport> {
    Ok(vault::mask_values(&[value])?.pop().flatten())
}

/// Tokens of many values, aligned with them (NULL stays NULL), with one vault upsert: the
/// loader's path (one call per batch, no per-row function calls).
#[pg_extern(volatile, parallel_unsafe, security_definer, schema = "sqs_loader")]
#[search_path(pg_catalog, pg_temp)]
fn mask_values(values: Vec<Option<String>>) -> Result<Vec<Option<String>>, ErrorReport> {
    Ok(vault::mask_values(&values)?)
}

/// Tokens of many values with one vault upsert: one row per distinct non-null value.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn mask_pii_batch(
    values: Vec<Option<String>>,
) -> Result<TableIterator<'static, (name!(value, String), name!(token, String))>, ErrorReport> {
    Ok(TableIterator::new(vault::mask_pairs(&values)?))
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

/// Write an unmask audit row in its own committed transaction (background worker).
#[pg_extern(volatile, schema = "sqs_loader")]
fn audit_unmask(token: Option<&str>, outcome: &str) -> Result<(), ErrorReport> {
    Ok(audit::record(token, outcome)?)
}

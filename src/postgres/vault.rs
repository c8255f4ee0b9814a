//! The database side of masking: token key and data keys via SPI, bulk vault upsert, and the
//! last RSA private key a session used (parsed once).
//!
//! A backend keeps one data key in memory (its plaintext never leaves the process; the
//! database holds it only wrapped under the RSA public key). It is replaced after
//! `DATA_KEY_USES` values, or when its row is gone (the transaction that created it aborted).

use super::plans;
use crate::known::{KnownTokens, Tag, TagSet};
use crate::mask::{self, MaskError, Token};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::cell::RefCell;
use std::rc::Rc;

/// Values sealed under one data key before a new one is made (far below the 2^64 nonces the
/// counter construction of [`mask::Sealer`] allows; it bounds how much one key protects).
const DATA_KEY_USES: u64 = 1_000_000;

struct CachedDataKey {
    id: i64,
    sealer: mask::Sealer,
    token_key_id: String,
    uses: u64,
}

thread_local! {
    static DATA_KEY: RefCell<Option<CachedDataKey>> = const { RefCell::new(None) };
    static KNOWN: RefCell<KnownTokens> = RefCell::new(KnownTokens::default());
    static CALLBACKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Vault stores left that go straight to ON CONFLICT (see [`PLAIN_BACKOFF_CALLS`]).
    static PLAIN_BACKOFF: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// After a plain INSERT into the vault failed on a token stored already (and was undone),
/// this many stores use ON CONFLICT DO NOTHING before a plain INSERT is tried again: bounds
/// the work undone where several loaders share values to one store in this many.
const PLAIN_BACKOFF_CALLS: u32 = 16;

/// Keep [`KNOWN`] in step with the transactions (registered once per backend, at first use).
fn register_callbacks() {
    if CALLBACKS.with(|c| c.replace(true)) {
        return;
    }
    // SAFETY: plain registrations; the callbacks only touch this backend's thread-local state
    // and cannot fail.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            let cap = super::guc::known_tokens();
            KNOWN.with(|k| k.borrow_mut().commit(cap));
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => {
            KNOWN.with(|k| k.borrow_mut().abort())
        }
        _ => {}
    }
}

unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    sub: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_COMMIT_SUB => KNOWN.with(|k| k.borrow_mut().subcommit(sub, parent)),
        SUBXACT_EVENT_ABORT_SUB => KNOWN.with(|k| k.borrow_mut().subabort(sub)),
        _ => {}
    }
}

fn state_err(message: String, hint: &'static str) -> MaskError {
    MaskError::State { message, hint }
}

fn spi_err(e: pgrx::spi::SpiError) -> MaskError {
    MaskError::Corrupt(format!("SPI: {e}"))
}

/// The token key, after checking it is the one the vault was built with; and whether the cached
/// data key `cached_dk` is still usable (its row exists, wrapped under the active RSA key).
/// Also the vault's identity (its oid and file: TRUNCATE or a new extension change it).
fn token_key(
    client: &SpiClient<'_>,
    cached_dk: i64,
) -> Result<(mask::TokenKey, String, bool, String), MaskError> {
    let rows = plans::select(
            client,
            "SELECT k.secret, k.key_id,
                    (SELECT d.token_key_id FROM sqs_loader.data_keys d LIMIT 1),
                    EXISTS (SELECT 1 FROM sqs_loader.data_keys d
                              JOIN sqs_loader.rsa_keys r ON r.fingerprint = d.rsa_fingerprint
                             WHERE d.id = $1 AND r.active),
                    'sqs_loader.vault'::regclass::oid::text || '/' || pg_relation_filenode('sqs_loader.vault')
               FROM sqs_loader.token_key k",
            Some(2),
            &[cached_dk.into()],
        )
        .map_err(spi_err)?;
    if rows.len() != 1 {
        return Err(state_err(
            "no token key is installed".into(),
            "A database restored without sqs_loader.token_key cannot mint matching tokens: restore the key \
             with sqs_loader.set_token_key(), or re-create the extension for a new, empty vault.",
        ));
    }
    let row = rows.first();
    let secret: Vec<u8> = row.get(1).map_err(spi_err)?.unwrap_or_default();
    let key_id: String = row.get(2).map_err(spi_err)?.unwrap_or_default();
    let vault_key_id: Option<String> = row.get(3).map_err(spi_err)?;
    let dk_exists: bool = row.get(4).map_err(spi_err)?.unwrap_or(false);
    let vault_id: String = row.get(5).map_err(spi_err)?.unwrap_or_default();
    let key = mask::TokenKey::from_bytes(&secret)?;
    if key.id() != key_id {
        return Err(MaskError::Corrupt(
            "sqs_loader.token_key: key_id does not match the key".into(),
        ));
    }
    if let Some(v) = vault_key_id {
        if v != key_id {
            return Err(state_err(
                format!("the installed token key ({key_id}) is not the one the vault was built with ({v})"),
                "The database was probably restored without its token key. Restore that key with \
                 sqs_loader.set_token_key(); masking now would silently produce different tokens.",
            ));
        }
    }
    Ok((key, key_id, dk_exists, vault_id))
}

/// Make a data key, wrap it under the active RSA public key, store it.
fn new_data_key(
    client: &mut SpiClient<'_>,
    token_key_id: &str,
) -> Result<CachedDataKey, MaskError> {
    // FOR SHARE: a concurrent rotation waits for us, then re-wraps this key as well.
    const ACTIVE: &str =
        "SELECT fingerprint, public_key FROM sqs_loader.rsa_keys WHERE active FOR SHARE";
    let mut active: Option<(String, String)> = None;
    // Twice: after waiting for a rotation's lock, the old key is gone from our snapshot and the
    // new one only visible to a new statement.
    for _ in 0..2 {
        let rows = client.update(ACTIVE, Some(1), &[]).map_err(spi_err)?;
        if !rows.is_empty() {
            let row = rows.first();
            active = Some((
                row.get(1).map_err(spi_err)?.unwrap_or_default(),
                row.get(2).map_err(spi_err)?.unwrap_or_default(),
            ));
            break;
        }
    }
    let Some((fingerprint, pem)) = active else {
        return Err(state_err(
            "no RSA public key is installed, so masked values could never be recovered".into(),
            "Install one with SELECT set_rsa_public_key(pg_read_file(...)) or from psql: \
             \\set pub `cat public_key.pem` then SELECT set_rsa_public_key(:'pub');",
        ));
    };
    let public = mask::parse_public_key(&pem)?;
    let key = mask::new_key();
    let wrapped = mask::wrap(&public, &key);
    let id = (getrandom::u64().map_err(|e| MaskError::Corrupt(e.to_string()))? >> 1) as i64;
    client
        .update(
            "INSERT INTO sqs_loader.data_keys(id, token_key_id, rsa_fingerprint, wrapped_key) VALUES ($1, $2, $3, $4)",
            None,
            &[id.into(), token_key_id.into(), fingerprint.into(), wrapped.into()],
        )
        .map_err(spi_err)?;
    Ok(CachedDataKey {
        id,
        sealer: mask::Sealer::new(&key),
        token_key_id: token_key_id.to_string(),
        uses: 0,
    })
}

/// Tokens of `values`, aligned with them (NULL stays NULL); one vault store
/// (`sqs_loader.vault_store()`) stores the values not yet stored, each distinct one once. Erased
/// tokens are never stored again. Values this backend knows are stored (see [`crate::known`])
/// cost their HMAC only: they are neither sealed nor stored, nor looked up in a map of the
/// batch's values. What the loader uses.
fn mask_and_store(values: &[Option<&str>]) -> Result<Vec<Option<Token>>, MaskError> {
    register_callbacks();
    Spi::connect_mut(|client| {
        let cached = DATA_KEY
            .with(|d| d.borrow().as_ref().map(|k| k.id))
            .unwrap_or(-1);
        let (tk, tk_id, dk_exists, vault_id) = token_key(client, cached)?;
        let stamp = format!("{vault_id}/{tk_id}");
        // The first index of each distinct value not known to be stored, and its tag.
        let (mut new, mut new_tags): (Vec<usize>, Vec<Tag>) = (vec![], vec![]);
        let tokens: Vec<Option<Token>> = KNOWN.with(|k| {
            let mut k = k.borrow_mut();
            k.check_stamp(&stamp);
            let mut seen = TagSet::default();
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.map(|v| {
                        let (token, tag) = tk.token_and_tag(v);
                        if !k.contains(tag) && seen.insert(tag) {
                            new.push(i);
                            new_tags.push(tag);
                        }
                        token
                    })
                })
                .collect()
        });
        if new.is_empty() {
            return Ok(tokens);
        }
        let token = |i: usize| {
            tokens[i]
                .as_ref()
                .expect("a new value is not NULL")
                .as_str()
        };
        // Their vault keys (sqs_loader.token_id()), and the order of those in the uuid B-tree:
        // concurrent loaders lock vault keys in the same order (no deadlocks).
        let new_ids: Vec<[u8; 16]> = new
            .iter()
            .map(|&i| tokens[i].expect("a new value is not NULL").vault_id())
            .collect();
        let mut order: Vec<usize> = (0..new.len()).collect();
        order.sort_unstable_by_key(|&j| new_ids[j]);
        let reuse = dk_exists
            && DATA_KEY.with(|d| {
                d.borrow().as_ref().is_some_and(|k| {
                    k.token_key_id == tk_id && k.uses + order.len() as u64 <= DATA_KEY_USES
                })
            });
        if !reuse {
            let dk = new_data_key(client, &tk_id)?;
            DATA_KEY.with(|d| *d.borrow_mut() = Some(dk));
        }
        let ids: Vec<pgrx::Uuid> = order
            .iter()
            .map(|&j| pgrx::Uuid::from_bytes(new_ids[j]))
            .collect();
        let (dk_id, sorted_tokens, sealed) = DATA_KEY.with(|d| {
            let mut d = d.borrow_mut();
            let k = d.as_mut().expect("data key set above");
            k.uses += order.len() as u64;
            let sealed: Vec<Vec<u8>> = order
                .iter()
                .map(|&j| {
                    let i = new[j];
                    let value = values[i].expect("a new value is not NULL");
                    k.sealer.seal(token(i), value.as_bytes())
                })
                .collect();
            let sorted: Vec<&str> = order.iter().map(|&j| token(new[j])).collect();
            (k.id, sorted, sealed)
        });
        // sqs_loader.vault_store() (sql/10_masking.sql): a plain INSERT when every token is new,
        // else ON CONFLICT DO NOTHING, which leaves an erased token's tombstone as it is.
        let try_plain = PLAIN_BACKOFF.with(|b| {
            let left = b.get();
            b.set(left.saturating_sub(1));
            left == 0
        });
        let plain: Option<bool> = plans::update(
            client,
            "SELECT sqs_loader.vault_store($1, $2, $3, $4, $5)",
            Some(1),
            &[
                ids.into(),
                sorted_tokens.into(),
                dk_id.into(),
                sealed.into(),
                try_plain.into(),
            ],
        )
        .map_err(spi_err)?
        .first()
        .get(1)
        .map_err(spi_err)?;
        if try_plain && plain != Some(true) {
            // Some token was stored already: values repeat across loaders here. Go straight to
            // ON CONFLICT for a while rather than undo a plain INSERT batch after batch.
            PLAIN_BACKOFF.with(|b| b.set(PLAIN_BACKOFF_CALLS));
        }
        // Stored now, by this statement or an earlier committed one: known once we commit.
        // SAFETY: a plain read of the transaction state.
        let sub = unsafe { pg_sys::GetCurrentSubTransactionId() };
        KNOWN.with(|k| k.borrow_mut().stored(sub, new_tags));
        Ok(tokens)
    })
}

/// Tokens of `values`, aligned with them (NULL stays NULL), without storing anything: what a
/// lookup needs (`mask_pii()`, `mask_pii_batch()`).
fn tokens_only(values: &[Option<&str>]) -> Result<Vec<Option<Token>>, MaskError> {
    Spi::connect(|client| {
        let (tk, _, _, _) = token_key(client, -1)?;
        Ok(values
            .iter()
            .map(|v| v.map(|v| tk.token_and_tag(v).0))
            .collect())
    })
}

/// Whether masking stores the values in the vault (the loader) or only computes tokens (lookups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Vault,
    TokensOnly,
}

/// Tokens for `values`, aligned with them (NULL stays NULL).
pub fn mask_values<'a>(
    values: impl IntoIterator<Item = Option<&'a str>>,
    store: Store,
) -> Result<Vec<Option<Token>>, MaskError> {
    let values: Vec<Option<&str>> = values.into_iter().collect();
    if values.iter().all(Option::is_none) {
        return Ok(vec![None; values.len()]);
    }
    match store {
        Store::Vault => mask_and_store(&values),
        Store::TokensOnly => tokens_only(&values),
    }
}

/// Pairs (value, token) for the distinct non-null values, sorted by value; stores nothing.
pub fn mask_pairs<'a>(
    values: impl IntoIterator<Item = Option<&'a str>>,
) -> Result<Vec<(String, String)>, MaskError> {
    let mut distinct: Vec<Option<&str>> = values.into_iter().filter(Option::is_some).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let tokens = if distinct.is_empty() {
        vec![]
    } else {
        tokens_only(&distinct)?
    };
    Ok(distinct
        .into_iter()
        .zip(tokens)
        .filter_map(|(v, t)| Some((v?.to_string(), t?.as_str().to_string())))
        .collect())
}

/// An RSA private key parsed from PEM (and decrypted with its passphrase). Parsing is slow, so
/// the last key a session used is kept, keyed by a digest of the PEM and passphrase.
pub fn private_key(pem: &str, passphrase: Option<&str>) -> Result<Rc<rsa::PrivateKey>, MaskError> {
    use sha2::{Digest, Sha256};
    thread_local! {
        static LAST: RefCell<Option<([u8; 32], Rc<rsa::PrivateKey>)>> = const { RefCell::new(None) };
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
        return Ok(k);
    }
    let k = Rc::new(mask::parse_private_key(pem, passphrase)?);
    LAST.with(|l| *l.borrow_mut() = Some((digest, k.clone())));
    Ok(k)
}

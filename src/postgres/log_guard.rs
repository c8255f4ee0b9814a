//! Keeping private keys and passphrases out of the server log and pg_stat_activity.
//!
//! A key passed to `unmask_pii()` is part of the statement text (or of its bind parameters).
//! PostgreSQL writes that text to the log in several places — the `STATEMENT:` line of an
//! error, `log_statement`, `log_min_duration_statement` with `DETAIL: parameters: …` — and
//! shows it in `pg_stat_activity`, some of them after the function has returned. So the
//! redaction happens where the text lives, not in the function's messages:
//!
//! - `emit_log_hook`: every log message (message, detail, context, internal query) is masked
//!   before it is written, and the statement text is masked in place so the `STATEMENT:` line
//!   is too;
//! - `post_parse_analyze_hook`: a statement holding a private key is masked in place right after
//!   it is parsed, and its `pg_stat_activity` entry rewritten;
//! - [`protect_statement`], called first thing by the functions that take secrets: the same for
//!   the running statement, plus literal secrets (passphrases, token keys) remembered for the
//!   rest of the session so that a later log line (a duration line with bind parameters) is
//!   masked too.
//!
//! The hooks are only in place in sessions that loaded the library before the statement: with
//! `sqs_loader` in `shared_preload_libraries`, that is every session; the functions that take
//! secrets refuse to run otherwise ([`require_preloaded`]).

use crate::redact;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

static PRELOADED: AtomicBool = AtomicBool::new(false);
/// The statement was masked in place where pg_stat_activity could not be told (while a log line
/// was written, e.g. by log_statement before the statement is parsed): tell it at the next
/// chance, after parse analysis.
static ACTIVITY_STALE: AtomicBool = AtomicBool::new(false);
static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;
static mut PREV_POST_PARSE: pg_sys::post_parse_analyze_hook_type = None;

/// Literal secrets registered this session, newest last (a few: they are masked in every log
/// line, and what they protect is gone from memory once the session ends).
const MAX_SECRETS: usize = 8;

thread_local! {
    static SECRETS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Install the hooks (from `_PG_init`), noting whether this is shared_preload_libraries.
pub fn install() {
    // SAFETY: _PG_init runs once per process, on its only thread; the previous hooks are chained.
    unsafe {
        PRELOADED.store(
            pg_sys::process_shared_preload_libraries_in_progress,
            Ordering::SeqCst,
        );
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
        PREV_POST_PARSE = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(post_parse_analyze);
    }
}

/// Whether the library was loaded by shared_preload_libraries (so every session has the hooks).
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::SeqCst)
}

fn with_secrets<T>(f: impl FnOnce(&[&[u8]]) -> T) -> Option<T> {
    SECRETS
        .try_with(|s| {
            let s = s.try_borrow().ok()?;
            let refs: Vec<&[u8]> = s.iter().map(Vec::as_slice).collect();
            Some(f(&refs))
        })
        .ok()
        .flatten()
}

fn remember(secret: &[u8]) {
    if secret.len() < 4 {
        return;
    }
    SECRETS.with(|s| {
        let mut s = s.borrow_mut();
        if !s.iter().any(|x| x == secret) {
            if s.len() == MAX_SECRETS {
                s.remove(0);
            }
            s.push(secret.to_vec());
        }
    });
}

/// The statement text, writable in place.
/// SAFETY: `debug_query_string` is the backend's own copy of the statement (message buffer or
/// cached plan source); only bytes inside secrets are ever written, never the length.
unsafe fn statement<'a>() -> Option<&'a mut [u8]> {
    let p = pg_sys::debug_query_string as *mut u8;
    if p.is_null() {
        return None;
    }
    let len = CStr::from_ptr(p as *const c_char).to_bytes().len();
    Some(std::slice::from_raw_parts_mut(p, len))
}

/// Mask, in place, private keys, the remembered secrets, `extra`, and token-key-shaped runs when
/// `token_keys` (or the statement calls set_token_key()). Read-only statement strings (a literal
/// some code points debug_query_string at) hold no secrets: nothing is written unless needed.
unsafe fn mask_statement(extra: &[&[u8]], token_keys: bool) -> bool {
    let Some(text) = statement() else {
        return false;
    };
    let token_keys = token_keys || redact::mentions_token_key(text);
    with_secrets(|known| {
        let all: Vec<&[u8]> = known.iter().chain(extra.iter()).copied().collect();
        let rules = redact::Rules {
            secrets: &all,
            token_key_literals: token_keys,
        };
        redact::holds_secret(text, &rules) && redact::mask_in_place(text, &rules)
    })
    .unwrap_or(false)
}

/// Redact the running statement: private keys (PEM blocks) and `secrets` are masked in its text
/// and in its pg_stat_activity entry, and `secrets` are masked in every later log line of this
/// session. Call it before anything that can fail.
pub fn protect_statement(secrets: &[&[u8]]) {
    for s in secrets {
        remember(s);
    }
    // SAFETY: see statement(); pgstat_report_activity copies the (masked) text.
    unsafe {
        if mask_statement(secrets, false) || ACTIVITY_STALE.swap(false, Ordering::SeqCst) {
            pg_sys::pgstat_report_activity(
                pg_sys::BackendState::STATE_RUNNING,
                pg_sys::debug_query_string,
            );
        }
    }
}

/// A function that takes secrets was called where the hooks are not in every session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} needs sqs_loader in shared_preload_libraries")]
pub struct NotPreloaded(pub String);

/// Refuse unless the hooks are in every session (the library is in shared_preload_libraries).
pub fn require_preloaded(what: &str) -> Result<(), NotPreloaded> {
    if preloaded() {
        Ok(())
    } else {
        Err(NotPreloaded(what.to_string()))
    }
}

/// A masked copy of a C string in ErrorContext, or None when it holds no secret.
unsafe fn masked_copy(s: *mut c_char, rules: &redact::Rules) -> Option<*mut c_char> {
    if s.is_null() {
        return None;
    }
    let text = CStr::from_ptr(s).to_string_lossy();
    let masked = redact::masked(&text, rules)?;
    let c = std::ffi::CString::new(masked).ok()?;
    Some(pg_sys::MemoryContextStrdup(
        pg_sys::ErrorContext,
        c.as_ptr(),
    ))
}

/// emit_log_hook: mask every part of the message that may quote the statement or its
/// parameters, and the statement itself (for the STATEMENT: line that follows). Never raises:
/// it runs while an error is being reported.
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    let _ = std::panic::catch_unwind(|| {
        let Some(e) = edata.as_mut() else { return };
        let mentions = |p: *mut c_char| {
            !p.is_null() && redact::mentions_token_key(CStr::from_ptr(p).to_bytes())
        };
        let token_keys = statement().is_some_and(|s| redact::mentions_token_key(s))
            || mentions(e.message)
            || mentions(e.context)
            || mentions(e.internalquery);
        if mask_statement(&[], token_keys) {
            ACTIVITY_STALE.store(true, Ordering::SeqCst);
        }
        let _ = with_secrets(|known| {
            let rules = redact::Rules {
                secrets: known,
                token_key_literals: token_keys,
            };
            for field in [
                &mut e.message,
                &mut e.detail,
                &mut e.detail_log,
                &mut e.hint,
                &mut e.context,
                &mut e.internalquery,
            ] {
                if let Some(m) = masked_copy(*field, &rules) {
                    *field = m;
                }
            }
        });
    });
    if let Some(prev) = PREV_EMIT_LOG {
        prev(edata);
    }
}

/// post_parse_analyze_hook: a top-level statement that holds a private key is masked as soon as
/// it is parsed, before it runs, and pg_stat_activity shows the masked text.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    if let Some(prev) = PREV_POST_PARSE {
        prev(pstate, query, jstate);
    }
    let top_level = !pstate.is_null()
        && !pg_sys::debug_query_string.is_null()
        && (*pstate).p_sourcetext == pg_sys::debug_query_string;
    let masked = top_level && mask_statement(&[], false);
    if masked || (top_level && ACTIVITY_STALE.swap(false, Ordering::SeqCst)) {
        pg_sys::pgstat_report_activity(
            pg_sys::BackendState::STATE_RUNNING,
            pg_sys::debug_query_string,
        );
    }
}

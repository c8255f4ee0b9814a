//! Audit rows for every access to PII — unmasking, exporting sealed values, token lookups —
//! written in their own transaction by a short-lived background worker, so that neither an
//! error nor the caller's ROLLBACK can remove them. A value is returned only after its row is
//! committed; if the worker cannot write it, the access fails.
//!
//! The caller resolves the role names (it may see roles its own transaction created) and hands
//! the rows to the worker in a dynamic shared memory segment; the worker reports its commit in
//! the same segment. (The caller cannot look for the rows itself: under REPEATABLE READ its
//! snapshot predates the worker's commit.)

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};
use std::ffi::CStr;

/// What was done with PII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// unmask_pii(): a value decrypted on the server.
    Unmask,
    /// sealed_values(): sealed values handed out for offline decryption.
    Export,
    /// mask_pii() / mask_pii_batch(): tokens of given values (a guess can be tested this way).
    Mask,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Unmask => "unmask",
            Action::Export => "export",
            Action::Mask => "mask",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        [Action::Unmask, Action::Export, Action::Mask]
            .into_iter()
            .find(|a| a.name() == s)
    }
}

/// One audit row: which token (if one), with which outcome, how many values (lookups).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub token: Option<String>,
    pub outcome: String,
    pub value_count: Option<i32>,
}

#[derive(Serialize, Deserialize)]
struct Row {
    audit_id: i64,
    action: Action,
    session_user: String,
    role: String,
    entry: Entry,
}

/// The audit rows could not be written (so nothing may be revealed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("cannot write the PII audit row: no background worker slot is free ({0})")]
    NoWorkerSlot(String),
    #[error("cannot write the PII audit row: the audit worker failed ({0})")]
    WorkerFailed(String),
    #[error("cannot write the PII audit row: the audit worker did not commit it")]
    NotCommitted,
}

fn role_name(oid: pg_sys::Oid) -> String {
    // SAFETY: GetUserNameFromId with noerr=true returns NULL or a palloc'd C string.
    unsafe {
        let p = pg_sys::GetUserNameFromId(oid, true);
        if p.is_null() {
            u32::from(oid).to_string()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Layout of the shared segment: payload length (u32 LE), committed flag (u8), JSON payload.
const HEADER: usize = 5;

/// Write `entries` (one row each) in a committed transaction of its own; return once they are.
pub fn record(action: Action, entries: Vec<Entry>) -> Result<(), AuditError> {
    if entries.is_empty() {
        return Ok(());
    }
    // SAFETY: plain reads of the backend's identity.
    let (session_user, role) = unsafe {
        (
            role_name(pg_sys::GetSessionUserId()),
            role_name(pg_sys::GetOuterUserId()),
        )
    };
    let rows: Vec<Row> = entries
        .into_iter()
        .map(|mut entry| {
            entry.token = entry.token.map(|t| t.chars().take(200).collect());
            Row {
                audit_id: (getrandom::u64().unwrap_or(0) >> 1) as i64,
                action,
                session_user: session_user.clone(),
                role: role.clone(),
                entry,
            }
        })
        .collect();
    let payload = serde_json::to_vec(&rows).expect("serialize audit rows");
    // SAFETY: a fresh segment of the right size; written within bounds, detached after the
    // worker has ended.
    let seg = unsafe {
        let seg = pg_sys::dsm_create(payload.len() + HEADER, 0);
        let addr = pg_sys::dsm_segment_address(seg) as *mut u8;
        std::ptr::copy_nonoverlapping((payload.len() as u32).to_le_bytes().as_ptr(), addr, 4);
        *addr.add(4) = 0;
        std::ptr::copy_nonoverlapping(payload.as_ptr(), addr.add(HEADER), payload.len());
        seg
    };
    let result = run_worker(seg);
    // SAFETY: the worker has exited; the flag byte is ours to read.
    let committed = unsafe {
        let c = *(pg_sys::dsm_segment_address(seg) as *const u8).add(4) == 1;
        pg_sys::dsm_detach(seg);
        c
    };
    result?;
    if !committed {
        return Err(AuditError::NotCommitted);
    }
    Ok(())
}

fn run_worker(seg: *mut pg_sys::dsm_segment) -> Result<(), AuditError> {
    // SAFETY: plain reads of the segment handle and the backend's database and pid.
    let (handle, db, pid) = unsafe {
        (
            pg_sys::dsm_segment_handle(seg),
            pg_sys::MyDatabaseId,
            pg_sys::MyProcPid,
        )
    };
    let worker = BackgroundWorkerBuilder::new("sqs_loader PII audit")
        .set_type("sqs_loader audit")
        .set_library("sqs_loader")
        .set_function("sqs_loader_audit_worker")
        .set_argument(Some(pg_sys::Datum::from(handle)))
        .set_extra(&u32::from(db).to_string())
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_notify_pid(pid)
        .load_dynamic()
        .map_err(|e| AuditError::NoWorkerSlot(format!("{e:?}")))?;
    worker
        .wait_for_shutdown()
        .map_err(|e| AuditError::WorkerFailed(format!("{e:?}")))
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_loader_audit_worker(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let db: u32 = BackgroundWorker::get_extra()
        .parse()
        .expect("database oid in bgw_extra");
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    let handle = arg.value() as u32;
    // SAFETY: the caller keeps the segment attached until this worker has exited.
    let seg = unsafe { pg_sys::dsm_attach(handle) };
    assert!(!seg.is_null(), "audit payload segment is gone");
    let addr = unsafe { pg_sys::dsm_segment_address(seg) as *mut u8 };
    let rows: Vec<Row> = unsafe {
        let mut len = [0u8; 4];
        std::ptr::copy_nonoverlapping(addr, len.as_mut_ptr(), 4);
        let bytes = std::slice::from_raw_parts(addr.add(HEADER), u32::from_le_bytes(len) as usize);
        serde_json::from_slice(bytes).expect("audit payload")
    };
    BackgroundWorker::transaction(|| {
        // The database's default search_path is its owner's to set: not this worker's.
        Spi::run("SET LOCAL search_path = pg_catalog, pg_temp").expect("pin search_path");
        for row in &rows {
            Spi::run_with_args(
                "INSERT INTO sqs_loader.unmask_audit(audit_id, action, session_user_name, role_name, token, outcome, value_count)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    row.audit_id.into(),
                    row.action.name().into(),
                    row.session_user.clone().into(),
                    row.role.clone().into(),
                    row.entry.token.clone().into(),
                    row.entry.outcome.clone().into(),
                    row.entry.value_count.into(),
                ],
            )
            .expect("insert the audit row");
        }
    });
    // Committed: say so (the caller reads this after the worker exited).
    unsafe {
        *addr.add(4) = 1;
        pg_sys::dsm_detach(seg);
    }
}

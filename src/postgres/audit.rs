//! Unmask audit rows written in their own transaction, by a short-lived background worker,
//! so that neither an error nor the caller's ROLLBACK can remove them. The plaintext is
//! returned only after the row is committed; if the worker cannot write it, unmasking fails.
//!
//! The caller resolves the role names (it may see roles its own transaction created) and hands
//! the row to the worker in a dynamic shared memory segment.

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};
use std::ffi::CStr;

#[derive(Serialize, Deserialize)]
struct Row {
    audit_id: i64,
    session_user: String,
    role: String,
    token: Option<String>,
    outcome: String,
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

/// The audit row could not be written (so nothing may be unmasked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("cannot write the unmask audit row: no background worker slot is free ({0})")]
    NoWorkerSlot(String),
    #[error("cannot write the unmask audit row: the audit worker failed ({0})")]
    WorkerFailed(String),
    #[error("cannot write the unmask audit row: the audit worker did not commit it")]
    NotCommitted,
}

pub fn record(token: Option<&str>, outcome: &str) -> Result<(), AuditError> {
    let row = Row {
        audit_id: (getrandom::u64().unwrap_or(0) >> 1) as i64,
        session_user: role_name(unsafe { pg_sys::GetSessionUserId() }),
        role: role_name(unsafe { pg_sys::GetOuterUserId() }),
        token: token.map(|t| t.chars().take(200).collect()),
        outcome: outcome.to_string(),
    };
    let payload = serde_json::to_vec(&row).expect("serialize audit row");
    // SAFETY: a fresh segment of the right size; we write within it and detach after the worker ended.
    let seg = unsafe {
        let seg = pg_sys::dsm_create(payload.len() + 4, 0);
        let addr = pg_sys::dsm_segment_address(seg) as *mut u8;
        std::ptr::copy_nonoverlapping((payload.len() as u32).to_le_bytes().as_ptr(), addr, 4);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), addr.add(4), payload.len());
        seg
    };
    let handle = unsafe { pg_sys::dsm_segment_handle(seg) };
    let db = unsafe { pg_sys::MyDatabaseId };
    let worker = BackgroundWorkerBuilder::new("sqs_loader unmask audit")
        .set_type("sqs_loader audit")
        .set_library("sqs_loader")
        .set_function("sqs_loader_audit_worker")
        .set_argument(Some(pg_sys::Datum::from(handle)))
        .set_extra(&u32::from(db).to_string())
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .map_err(|e| AuditError::NoWorkerSlot(format!("{e:?}")))?;
    if let Err(e) = worker.wait_for_shutdown() {
        return Err(AuditError::WorkerFailed(format!("{e:?}")));
    }
    unsafe { pg_sys::dsm_detach(seg) };
    let written = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM sqs_loader.unmask_audit WHERE audit_id = $1)",
        &[row.audit_id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !written {
        return Err(AuditError::NotCommitted);
    }
    Ok(())
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
    BackgroundWorker::transaction(|| {
        // SAFETY: the caller keeps the segment attached until this worker has exited.
        let row: Row = unsafe {
            let seg = pg_sys::dsm_attach(handle);
            assert!(!seg.is_null(), "audit payload segment is gone");
            let addr = pg_sys::dsm_segment_address(seg) as *const u8;
            let mut len = [0u8; 4];
            std::ptr::copy_nonoverlapping(addr, len.as_mut_ptr(), 4);
            let bytes =
                std::slice::from_raw_parts(addr.add(4), u32::from_le_bytes(len) as usize).to_vec();
            pg_sys::dsm_detach(seg);
            serde_json::from_slice(&bytes).expect("audit payload")
        };
        Spi::run_with_args(
            "INSERT INTO sqs_loader.unmask_audit(audit_id, session_user_name, role_name, token, outcome)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                row.audit_id.into(),
                row.session_user.into(),
                row.role.into(),
                row.token.into(),
                row.outcome.into(),
            ],
        )
        .expect("insert the unmask audit row");
    });
}

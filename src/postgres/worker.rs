//! Continuous loading: background workers that run the loader without pause.
//!
//! Three kinds of process, all in this library (so it must be in shared_preload_libraries):
//! - the **launcher** (static, one per cluster): at server start it starts a supervisor in every
//!   database, connecting first to `sqs_loader.database` to list them;
//! - a **supervisor** per database (dynamic; restarted after a crash; one at a time thanks to an
//!   advisory lock): every second it compares `sqs_loader.workers` with the worker processes it
//!   runs, starts the missing ones (again after a crash or a termination, not sooner than
//!   [`RESTART_BACKOFF`]), stops the ones no longer wanted, and exits when there is nothing to
//!   run (`start_worker()` starts it again);
//! - a **worker** per queue and process slot: long-polls the queue and loads through exactly the
//!   path of `CALL load_user_logins()` — `run_begin`, `run_batch` until it returns false,
//!   `run_end`, each in a transaction of its own — starting a new run every
//!   `sqs_loader.worker_run_seconds`. SIGTERM (stop_worker(), pg_terminate_backend, server
//!   shutdown) stops it cleanly: the batch being loaded is committed, a long poll is abandoned,
//!   the run is recorded as stopped.

use super::guc;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A worker is not started again sooner than this after its last start.
const RESTART_BACKOFF: Duration = Duration::from_secs(5);
/// How long a worker waits after a run that failed (the queue unreachable, say) before the next.
const FAILED_RUN_PAUSE: Duration = Duration::from_secs(5);
/// How often the supervisor compares the wanted workers with the running ones.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// Advisory lock class of the supervisors (one per database): "sqsl" in ASCII.
const SUPERVISOR_LOCK: i32 = 0x7371_736c;

static IS_WORKER: AtomicBool = AtomicBool::new(false);

/// Whether this process is a loader worker that was asked to stop (SIGTERM): waits for long
/// polls give up, and the worker stops after the batch it is loading.
pub fn stop_requested() -> bool {
    // SAFETY: a plain read of a flag the SIGTERM handler sets.
    IS_WORKER.load(Ordering::SeqCst) && unsafe { pg_sys::ShutdownRequestPending != 0 }
}

/// Register the launcher (from `_PG_init`, only while shared_preload_libraries is processed).
pub fn register_launcher() {
    BackgroundWorkerBuilder::new("sqs_loader launcher")
        .set_type("sqs_loader launcher")
        .set_library("sqs_loader")
        .set_function("sqs_loader_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(30)))
        .load();
}

fn supervisor_builder(db: pg_sys::Oid) -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new("sqs_loader supervisor")
        .set_type("sqs_loader supervisor")
        .set_library("sqs_loader")
        .set_function("sqs_loader_supervisor_main")
        .set_extra(&u32::from(db).to_string())
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_BACKOFF))
}

/// Start this database's supervisor once the current transaction commits (a start_worker()
/// that rolls back starts nothing). If one runs already, the new one sees its lock and exits.
pub fn launch_supervisor_after_commit() {
    // SAFETY: a plain read of the backend's database.
    let db = unsafe { pg_sys::MyDatabaseId };
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        // Post-commit: no error may be raised. Without a free slot the supervisor starts with
        // the next server start (the launcher) or the next start_worker().
        if supervisor_builder(db).load_dynamic().is_err() {
            pgrx::warning!(
                "sqs_loader: no background worker slot for the supervisor; raise max_worker_processes"
            );
        }
    });
}

/// Run `f` in a transaction of its own; an ERROR aborts the transaction and comes back as its
/// message instead of ending the process.
fn transaction<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    // SAFETY: the usual start of a background worker's transaction.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let r = PgTryBuilder::new(|| Ok(f()))
        .catch_others(|e| {
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                    r.message().to_string()
                }
            })
        })
        .execute();
    // SAFETY: end the transaction started above, committing it or cleaning up after an ERROR.
    unsafe {
        match &r {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    r
}

fn log(msg: &str) {
    pgrx::log!("{msg}");
}

/// Sleep on the latch; false once SIGTERM arrived or the postmaster died.
fn nap(d: Duration) -> bool {
    BackgroundWorker::wait_latch(Some(d)) && unsafe { pg_sys::ShutdownRequestPending == 0 }
}

// ---------------------------------------------------------------- launcher

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_loader_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::launcher_database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    let dbs = transaction(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT oid FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate",
                None,
                &[],
            )
            .map(|rows| {
                rows.filter_map(|r| r.get::<pg_sys::Oid>(1).ok().flatten())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        })
    })
    .unwrap_or_else(|e| {
        log(&format!("sqs_loader launcher: cannot list databases: {e}"));
        vec![]
    });
    // One database at a time: a supervisor with nothing to run exits within a moment and frees
    // its slot, so that many databases do not need many slots at once.
    for oid in dbs {
        let handle = supervisor_builder(oid)
            // SAFETY: a plain read of this process's pid.
            .set_notify_pid(unsafe { pg_sys::MyProcPid })
            .load_dynamic();
        let Ok(handle) = handle else {
            log("sqs_loader launcher: no background worker slot for a supervisor; raise max_worker_processes");
            continue;
        };
        if handle.wait_for_startup().is_err() {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && handle.pid().is_ok() {
            if !nap(Duration::from_millis(50)) {
                return;
            }
        }
    }
    // Done: supervisors restart themselves; this runs again after a restart or a crash.
}

// ---------------------------------------------------------------- supervisor

/// One wanted worker process: which row, which slot, as which role.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    worker: i64,
    slot: i32,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_loader_supervisor_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db: u32 = BackgroundWorker::get_extra().parse().expect("database oid");
    let db = pg_sys::Oid::from(db);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    // One supervisor per database: a session-level advisory lock, held until this process ends.
    let mine = transaction(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.pg_try_advisory_lock($1, $2)",
            &[SUPERVISOR_LOCK.into(), (u32::from(db) as i32).into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    });
    match mine {
        Ok(true) => {}
        Ok(false) => return, // another supervisor runs in this database
        Err(e) => {
            log(&format!("sqs_loader supervisor: {e}"));
            return;
        }
    }
    let mut running: HashMap<Slot, DynamicBackgroundWorker> = HashMap::new();
    let mut last_start: HashMap<Slot, Instant> = HashMap::new();
    loop {
        // SAFETY: a plain read of the flag the SIGHUP handler sets.
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let wanted = match transaction(wanted_workers) {
            Ok(Some(w)) => w,
            Ok(None) => {
                // The extension is not (or no longer) in this database: nothing to run.
                for (_, h) in running.drain() {
                    let _ = h.terminate();
                }
                break;
            }
            Err(e) => {
                log(&format!("sqs_loader supervisor: {e}"));
                if !nap(SUPERVISE_EVERY) {
                    break;
                }
                continue;
            }
        };
        // Stop what is no longer wanted (the worker finishes its batch, then exits), and forget
        // what exited or crashed (it is started again below).
        let slots: Vec<Slot> = running.keys().copied().collect();
        for slot in slots {
            if !wanted.contains_key(&slot) {
                let _ = running.remove(&slot).map(|h| h.terminate());
            } else if matches!(
                running[&slot].pid(),
                Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied)
            ) {
                running.remove(&slot);
            }
        }
        // Start what is missing: never started, exited, or crashed.
        for (slot, role) in &wanted {
            if running.contains_key(slot) {
                continue;
            }
            if last_start
                .get(slot)
                .is_some_and(|t| t.elapsed() < RESTART_BACKOFF)
            {
                continue;
            }
            last_start.insert(*slot, Instant::now());
            match worker_builder(db, *role, *slot).load_dynamic() {
                Ok(handle) => {
                    running.insert(*slot, handle);
                }
                Err(_) => log(
                    "sqs_loader supervisor: no background worker slot; raise max_worker_processes",
                ),
            }
        }
        if wanted.is_empty() && running.is_empty() {
            break; // nothing to supervise; start_worker() starts a supervisor again
        }
        if !nap(SUPERVISE_EVERY) {
            break;
        }
    }
}

/// The worker processes this database wants (slot → role oid), or None without the extension.
fn wanted_workers() -> Option<HashMap<Slot, pg_sys::Oid>> {
    let installed = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'sqs_loader')",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !installed {
        return None;
    }
    Spi::connect(|c| {
        let rows = c
            .select(
                "SELECT w.id, s.slot, r.oid
                   FROM sqs_loader.workers w
                   JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) w.run_as
                  CROSS JOIN LATERAL pg_catalog.generate_series(0, w.processes - 1) AS s(slot)",
                None,
                &[],
            )
            .ok()?;
        Some(
            rows.filter_map(|r| {
                Some((
                    Slot {
                        worker: r.get::<i64>(1).ok()??,
                        slot: r.get::<i32>(2).ok()??,
                    },
                    r.get::<pg_sys::Oid>(3).ok()??,
                ))
            })
            .collect(),
        )
    })
}

fn worker_builder(db: pg_sys::Oid, role: pg_sys::Oid, slot: Slot) -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new(&format!("sqs_loader worker {} #{}", slot.worker, slot.slot))
        .set_type("sqs_loader worker")
        .set_library("sqs_loader")
        .set_function("sqs_loader_worker_main")
        .set_extra(&format!(
            "{} {} {} {}",
            u32::from(db),
            u32::from(role),
            slot.worker,
            slot.slot
        ))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        // The supervisor restarts it (after RESTART_BACKOFF); after a crash, the supervisor's
        // own restart does.
        .set_restart_time(None)
        // SAFETY: a plain read of this process's pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
}

// ---------------------------------------------------------------- worker

/// What a worker reads from its row of sqs_loader.workers.
struct Config {
    queue_url: String,
    processes: i32,
    batch_size: Option<i32>,
    wait_seconds: i32,
}

fn config(worker: i64) -> Option<Config> {
    // No table: the extension was dropped.
    Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('sqs_loader.workers') IS NOT NULL")
        .ok()
        .flatten()
        .filter(|t| *t)?;
    Spi::connect(|c| {
        let rows = c
            .select(
                "SELECT queue_url, processes, batch_size, wait_seconds FROM sqs_loader.workers
                  WHERE id OPERATOR(pg_catalog.=) $1",
                None,
                &[worker.into()],
            )
            .ok()?;
        let r = rows.into_iter().next()?;
        Some(Config {
            queue_url: r.get::<String>(1).ok()??,
            processes: r.get::<i32>(2).ok()??,
            batch_size: r.get::<i32>(3).ok()?,
            wait_seconds: r.get::<i32>(4).ok()??,
        })
    })
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_loader_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let extra: Vec<u64> = BackgroundWorker::get_extra()
        .split(' ')
        .map(|v| v.parse().expect("worker arguments"))
        .collect();
    let (db, role, worker, slot) = (
        extra[0] as u32,
        extra[1] as u32,
        extra[2] as i64,
        extra[3] as i32,
    );
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(db)),
        Some(pg_sys::Oid::from(role)),
    );
    IS_WORKER.store(true, Ordering::SeqCst);
    // Named in pg_stat_activity after its row of sqs_loader.workers and its slot.
    let _ = transaction(|| {
        Spi::run(&format!(
            "SET application_name = 'sqs_loader worker {worker}#{slot}'"
        ))
    });
    while !stop_requested() {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reload postgresql.conf, as every process does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let cfg = match transaction(|| config(worker)) {
            Ok(Some(c)) if slot < c.processes => c,
            Ok(_) => return, // stopped (row deleted) or scaled down
            Err(e) => {
                log(&format!("sqs_loader worker {worker}: {e}"));
                if !nap(FAILED_RUN_PAUSE) {
                    return;
                }
                continue;
            }
        };
        let failed = match run(&cfg) {
            Ok((status, error)) => {
                let failed = status == "failed" || status == "delete_failed";
                if failed {
                    // Also in sqs_loader.load_runs and stat_loaders.last_error.
                    log(&format!(
                        "sqs_loader worker {worker} on {}: run {status}: {}",
                        cfg.queue_url,
                        error.unwrap_or_default()
                    ));
                }
                failed
            }
            Err(e) => {
                log(&format!(
                    "sqs_loader worker {worker} on {}: {e}",
                    cfg.queue_url
                ));
                true
            }
        };
        if failed && !nap(FAILED_RUN_PAUSE) {
            return;
        }
    }
}

/// One run, from begin to end; its final status and error.
fn run(cfg: &Config) -> Result<(String, Option<String>), String> {
    let run_seconds = guc::worker_run_seconds();
    let run_id = transaction(|| {
        if let Some(b) = cfg.batch_size {
            Spi::run(&format!("SET sqs_loader.batch_size = {b}")).expect("batch size");
        }
        Spi::get_one_with_args::<i64>(
            "SELECT sqs_loader.run_begin($1, NULL, $2, 'worker', $3, false)",
            &[
                cfg.queue_url.clone().into(),
                run_seconds.into(),
                cfg.wait_seconds.into(),
            ],
        )
        .expect("run_begin")
        .expect("a run id")
    })?;
    loop {
        let more = transaction(|| {
            Spi::get_one_with_args::<bool>("SELECT sqs_loader.run_batch($1)", &[run_id.into()])
                .expect("run_batch")
                .unwrap_or(false)
        })?;
        if !more || stop_requested() {
            break;
        }
    }
    let stopped = stop_requested();
    transaction(|| {
        Spi::get_two_with_args::<String, String>(
            "SELECT r.status, r.error FROM sqs_loader.run_end($1, $2) AS r",
            &[run_id.into(), stopped.into()],
        )
        .map(|(status, error)| (status.unwrap_or_default(), error))
        .expect("run_end")
    })
}

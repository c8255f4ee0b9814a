//! The Postgres glue: settings, errors, I/O threads, per-backend loader state, the vault and
//! the audit. Everything that calls into Postgres lives here or in `crate::api`.

pub mod audit;
pub mod backend;
pub mod batch;
pub mod error;
pub mod guc;
pub mod loader_state;
pub mod log_guard;
pub mod plans;
pub mod run_slots;
pub mod sqs_client;
pub mod token_array;
pub mod vault;
pub mod worker;

//! sqs_loader: pull login events from Amazon SQS inside PostgreSQL, mask their PII, load them
//! exactly once.
//!
//! - `sqs`, `login`, `mask`: plain Rust (no Postgres), unit-tested, proptested and fuzzed;
//! - `postgres`: the glue (settings, errors, I/O threads, loader state, vault, audit);
//! - `api`: the `#[pg_extern]` wrappers, thin;
//! - `sql/`: tables, the loader procedure and the grants, chained below in dependency order.

::pgrx::pg_module_magic!(name, version);

mod api;
pub mod hex;
pub mod known;
pub mod login;
pub mod mask;
mod postgres;
pub mod redact;
pub mod rfc3339;
pub mod sqs;

pgrx::extension_sql_file!("../sql/00_schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!(
    "../sql/10_masking.sql",
    name = "masking",
    requires = [
        "schema",
        api::sqs::sqs_pull,
        api::sqs::sqs_send,
        api::masking::mask_pii,
        api::masking::mask_pii_batch,
        api::masking::new_token_key,
        api::masking::token_key_id,
        api::masking::rsa_key_info,
        api::masking::unseal,
        api::masking::rewrap,
        api::masking::private_key_fingerprint,
        api::masking::audit_access,
        api::masking::protect_statement,
        api::masking::require_caller,
        api::masking::require_preloaded
    ]
);
pgrx::extension_sql_file!(
    "../sql/20_loader.sql",
    name = "loader",
    requires = [
        "masking",
        api::loader::pull,
        api::loader::release_prefetched,
        api::sqs::sqs_delete,
        api::loader::delete_after_commit,
        api::loader::loader_settings,
        api::loader::batch_abandoned,
        api::loader::delete_collect,
        api::sqs::sqs_queue_attributes,
        api::masking::mask_values,
        api::loader::prepare_batch,
        api::loader::parse_login,
        api::loader::version
    ]
);
pgrx::extension_sql_file!(
    "../sql/30_workers.sql",
    name = "workers",
    requires = [
        "loader",
        api::loader::check_queue_url,
        api::loader::launch_supervisor,
        api::masking::require_caller,
        api::masking::require_preloaded
    ]
);
pgrx::extension_sql_file!("../sql/90_privileges.sql", name = "privileges", finalize);

#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    postgres::guc::init();
    postgres::log_guard::install();
    if postgres::log_guard::preloaded() {
        postgres::worker::register_launcher();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let localstack = std::env::var("SQS_LOADER_TEST_LOCALSTACK")
            .unwrap_or_else(|_| "http://127.0.0.1:4566".into());
        vec![
            "shared_preload_libraries='pg_cron,sqs_loader'",
            "cron.database_name='pgrx_tests'",
            "max_worker_processes=16",
            // LocalStack on loopback: a superuser's explicit choice, as in every local cluster.
            "sqs_loader.allowed_hosts='localhost,127.0.0.1,::1,*.amazonaws.com'",
            Box::leak(format!("sqs_loader_test.localstack='{localstack}'").into_boxed_str()),
        ]
    }
}

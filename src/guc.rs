//! Settings (`sqs_loader.*` GUCs). Read them only on the backend's own thread.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::PostgresGucEnum;
use std::ffi::{CStr, CString};

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum WireProtocol {
    #[name = c"json"]
    Json,
    #[name = c"query"]
    Query,
}

pub static QUEUE_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static REGION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"us-east-1"));
pub static PROTOCOL: GucSetting<WireProtocol> = GucSetting::<WireProtocol>::new(WireProtocol::Json);
pub static ALLOWED_HOSTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(
    c"*.amazonaws.com,*.amazonaws.com.cn,localhost,127.0.0.1,::1",
));
pub static AWS_ACCESS_KEY_ID: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static AWS_SECRET_ACCESS_KEY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static AWS_SESSION_TOKEN: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static HTTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static MAX_PARALLEL_REQUESTS: GucSetting<i32> = GucSetting::<i32>::new(8);
pub static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);
// Settings of load_user_logins() (read by the procedure with current_setting()).
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(500);
pub static VISIBILITY_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(120);
pub static WAIT_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static MAX_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(50);
pub static MAX_MESSAGES: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static EXIT_WHEN_EMPTY: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static DEDUP_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(15);
pub static PROGRESS_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(5);

pub fn string(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get()
        .map(|c| c.to_string_lossy().trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Refuse to take an AWS secret from a source that other roles can read: `ALTER DATABASE/ROLE
/// ... SET` (stored in the world-readable pg_db_role_setting) and function `SET` clauses
/// (pg_proc.proconfig), which are validated with source PGC_S_TEST.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn secret_check_hook(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    let empty =
        newval.is_null() || (*newval).is_null() || CStr::from_ptr(*newval).to_bytes().is_empty();
    let readable_by_others = matches!(
        source,
        pg_sys::GucSource::PGC_S_TEST
            | pg_sys::GucSource::PGC_S_DATABASE
            | pg_sys::GucSource::PGC_S_USER
            | pg_sys::GucSource::PGC_S_DATABASE_USER
            | pg_sys::GucSource::PGC_S_GLOBAL
    );
    if empty || !readable_by_others {
        return true;
    }
    pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32);
    pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(
        c"AWS credentials cannot be stored with ALTER DATABASE/ROLE SET or a function SET clause"
            .as_ptr(),
    );
    pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(
        c"Those are readable by every role. Use the server environment, an instance role, postgresql.conf or ALTER SYSTEM."
            .as_ptr(),
    );
    false
}

fn define_secret(
    name: &'static CStr,
    short: &'static CStr,
    setting: &'static GucSetting<Option<CString>>,
) {
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            name,
            short,
            c"Superuser only; hidden from other roles in SHOW, pg_settings and current_setting(). \
              Prefer the server environment or an instance role.",
            setting,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL,
            Some(secret_check_hook),
            None,
            None,
        );
    }
}

pub fn init() {
    GucRegistry::define_string_guc(
        c"sqs_loader.queue_url",
        c"Queue URL load_user_logins() reads when called without one.",
        c"AWS: https://sqs.<region>.amazonaws.com/<account>/<name>; LocalStack: http://localhost:4566/000000000000/<name>.",
        &QUEUE_URL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sqs_loader.endpoint",
        c"Send every SQS request to this endpoint (scheme://host[:port]) instead of the queue URL's host.",
        c"Empty: use the queue URL's host. Also used by sqs_create_queue().",
        &ENDPOINT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sqs_loader.region",
        c"Signing region when the endpoint host does not name one (LocalStack, custom endpoints).",
        c"",
        &REGION,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"sqs_loader.protocol",
        c"SQS wire protocol: json (AWS JSON 1.0) or query (form + XML, e.g. LocalStack 0.14).",
        c"",
        &PROTOCOL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sqs_loader.allowed_hosts",
        c"Comma-separated hosts SQS requests may go to (exact names, *.suffix, or *).",
        c"Keeps roles allowed to call the sqs_* functions from making the server talk to arbitrary hosts.",
        &ALLOWED_HOSTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    define_secret(
        c"sqs_loader.aws_access_key_id",
        c"AWS access key id.",
        &AWS_ACCESS_KEY_ID,
    );
    define_secret(
        c"sqs_loader.aws_secret_access_key",
        c"AWS secret access key.",
        &AWS_SECRET_ACCESS_KEY,
    );
    define_secret(
        c"sqs_loader.aws_session_token",
        c"AWS session token (temporary credentials).",
        &AWS_SESSION_TOKEN,
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.http_timeout_ms",
        c"Timeout of one SQS HTTP request, in milliseconds (long-poll waits are added to it).",
        c"",
        &HTTP_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.max_parallel_requests",
        c"Most SQS requests one call keeps in flight at once.",
        c"",
        &MAX_PARALLEL_REQUESTS,
        1,
        64,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.max_retries",
        c"Retries of a request after 5xx, throttling or connection errors (exponential backoff with jitter).",
        c"",
        &MAX_RETRIES,
        0,
        10,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.batch_size",
        c"Messages load_user_logins() pulls and commits per transaction.",
        c"",
        &BATCH_SIZE,
        1,
        10_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.visibility_timeout",
        c"Visibility timeout (seconds) load_user_logins() asks for; 0 uses the queue's own.",
        c"Must exceed the time one batch takes, or another loader may receive the same message (it is then skipped, not duplicated).",
        &VISIBILITY_TIMEOUT,
        0,
        43_200,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.wait_seconds",
        c"Long-poll wait (seconds) of load_user_logins()'s receives.",
        c"",
        &WAIT_SECONDS,
        0,
        20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.max_seconds",
        c"Default time limit (seconds) of one load_user_logins() run.",
        c"Under a minute so that per-minute pg_cron runs do not overlap much.",
        &MAX_SECONDS,
        1,
        86_400,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.max_messages",
        c"Default message limit of one load_user_logins() run; 0 means no limit.",
        c"",
        &MAX_MESSAGES,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"sqs_loader.exit_when_empty",
        c"Whether load_user_logins() returns as soon as a receive finds the queue empty.",
        c"Off: keep long-polling until max_seconds (continuous consumption from pg_cron).",
        &EXIT_WHEN_EMPTY,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.dedup_retention_days",
        c"Days the ids of loaded messages are kept to recognise redeliveries (more than SQS's 14-day maximum retention).",
        c"",
        &DEDUP_RETENTION_DAYS,
        15,
        3650,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_loader.progress_seconds",
        c"Seconds between progress NOTICEs of a long load_user_logins() run.",
        c"",
        &PROGRESS_SECONDS,
        1,
        3600,
        GucContext::Userset,
        GucFlags::default(),
    );
    unsafe { pg_sys::MarkGUCPrefixReserved(c"sqs_loader".as_ptr()) };
}

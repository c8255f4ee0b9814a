//! Settings (`sqs_loader.*` GUCs): private statics, one typed getter each. The GUC ranges
//! guarantee the bounds, so callers use the values as they come. Read them only on the
//! backend's own thread. The table of every setting is in docs/reference.md (checked against
//! pg_settings by a test).

use super::log_guard;
use crate::sqs::credentials::Configured;
use crate::sqs::http::CallOptions;
use crate::sqs::Protocol;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::PostgresGucEnum;
use std::ffi::{CStr, CString};
use std::time::Duration;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum WireProtocol {
    #[name = c"json"]
    Json,
    #[name = c"query"]
    Query,
}

// ---------------------------------------------------------------- SQS endpoint and wire

/// Queue `load_user_logins()` reads when called without one.
static QUEUE_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Where every request goes instead of the queue URL's host (VPC endpoints, emulators).
static ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Signing region when the host does not name one.
static REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"us-east-1"));
/// AWS JSON 1.0 or the query protocol.
static PROTOCOL: GucSetting<WireProtocol> = GucSetting::<WireProtocol>::new(WireProtocol::Json);
/// Hosts requests may go to (superuser only).
static ALLOWED_HOSTS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"*.amazonaws.com,*.amazonaws.com.cn"));
/// The HTTP CONNECT proxy SQS and STS requests go through (superuser only; hidden).
static PROXY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// One HTTP request's timeout.
static HTTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// Requests one call keeps in flight (a loader fewer while fewer do: `sqs::pace`).
static MAX_PARALLEL_REQUESTS: GucSetting<i32> = GucSetting::<i32>::new(8);
/// Whether a loader keeps fewer requests in flight while fewer do (`sqs::pace`).
static ADAPT_REQUESTS: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Retries after 5xx, throttling or connection errors.
static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);

// ---------------------------------------------------------------- credentials (secrets)

/// Static credentials: superuser only, hidden from other roles.
static AWS_ACCESS_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static AWS_SECRET_ACCESS_KEY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
static AWS_SESSION_TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// A role to assume with whatever credentials the chain found (cross-account queues).
static ROLE_ARN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// The external id the role's trust policy asks for.
static ROLE_EXTERNAL_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Where STS AssumeRole goes (empty: the regional endpoint).
static STS_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

// ---------------------------------------------------------------- load_user_logins()

/// Messages pulled and committed per transaction.
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(500);
/// Visibility timeout asked for on receive (0: the queue's own).
static VISIBILITY_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(120);
/// Long-poll wait of the loader's receives.
static WAIT_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(1);
/// Time limit of one run.
static MAX_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(50);
/// Message limit of one run (0: none).
static MAX_MESSAGES: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Return as soon as a receive finds the queue empty.
static EXIT_WHEN_EMPTY: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Days the ids of processed messages are kept.
static DEDUP_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(15);
/// Receives after which a batch that keeps failing is loaded one message at a time (0: never).
static POISON_RECEIVE_COUNT: GucSetting<i32> = GucSetting::<i32>::new(3);
/// Tokens a backend remembers as stored in the vault (0: none), so it skips storing them again.
static KNOWN_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(100_000);
/// Seconds between progress NOTICEs.
static PROGRESS_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(5);
/// Runs of one queue that load at a time in a database (-1: half the CPUs, at least 1; 0: any).
static MAX_RUNS_PER_QUEUE: GucSetting<i32> = GucSetting::<i32>::new(-1);

// ---------------------------------------------------------------- background workers

/// The database the launcher connects to, to list the others.
static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Length of a worker's run before it records it and starts the next.
static WORKER_RUN_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(300);

// ---------------------------------------------------------------- typed getters

fn string(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get()
        .map(|c| c.to_string_lossy().trim().to_string())
        .filter(|v| !v.is_empty())
}

pub fn queue_url() -> Option<String> {
    string(&QUEUE_URL)
}

pub fn endpoint_override() -> Option<String> {
    string(&ENDPOINT)
}

pub fn region() -> String {
    string(&REGION).unwrap_or_else(|| "us-east-1".into())
}

pub fn allowed_hosts() -> String {
    string(&ALLOWED_HOSTS).unwrap_or_default()
}

/// `sqs_loader.proxy`, unparsed (its check hook parsed it when it was set).
pub fn proxy() -> Option<String> {
    string(&PROXY)
}

/// The credential settings, and the proxy STS requests go through.
pub fn configured_credentials(proxy: Option<ureq::Proxy>) -> Configured {
    Configured {
        access_key_id: string(&AWS_ACCESS_KEY_ID),
        secret_access_key: string(&AWS_SECRET_ACCESS_KEY),
        session_token: string(&AWS_SESSION_TOKEN),
        role_arn: string(&ROLE_ARN),
        role_external_id: string(&ROLE_EXTERNAL_ID),
        sts_endpoint: string(&STS_ENDPOINT),
        region: region(),
        proxy,
    }
}

pub fn call_options() -> CallOptions {
    CallOptions {
        protocol: match PROTOCOL.get() {
            WireProtocol::Json => Protocol::Json,
            WireProtocol::Query => Protocol::Query,
        },
        timeout: Duration::from_millis(HTTP_TIMEOUT_MS.get() as u64),
        max_retries: MAX_RETRIES.get() as u32,
        // SAFETY: a plain check of the current user's privileges.
        reveal_foreign_bodies: unsafe { pg_sys::superuser() },
    }
}

pub fn max_parallel_requests() -> usize {
    MAX_PARALLEL_REQUESTS.get() as usize
}

pub fn adapt_requests() -> bool {
    ADAPT_REQUESTS.get()
}

pub fn batch_size() -> i32 {
    BATCH_SIZE.get()
}

/// None: use the queue's own visibility timeout.
pub fn visibility_timeout() -> Option<i32> {
    Some(VISIBILITY_TIMEOUT.get()).filter(|v| *v > 0)
}

pub fn wait_seconds() -> i32 {
    WAIT_SECONDS.get()
}

pub fn max_seconds() -> i32 {
    MAX_SECONDS.get()
}

/// None: no limit.
pub fn max_messages() -> Option<i32> {
    Some(MAX_MESSAGES.get()).filter(|v| *v > 0)
}

pub fn exit_when_empty() -> bool {
    EXIT_WHEN_EMPTY.get()
}

pub fn dedup_retention_days() -> i32 {
    DEDUP_RETENTION_DAYS.get()
}

/// None: batches are never split to find a poison message.
pub fn poison_receive_count() -> Option<i32> {
    Some(POISON_RECEIVE_COUNT.get()).filter(|v| *v > 0)
}

pub fn known_tokens() -> usize {
    KNOWN_TOKENS.get().max(0) as usize
}

pub fn progress_seconds() -> i32 {
    PROGRESS_SECONDS.get()
}

/// How many runs of one queue may load at a time in this database; `None`: any number.
/// The default (-1) is half the CPUs this process may use, at least 1.
pub fn max_runs_per_queue() -> Option<u32> {
    match MAX_RUNS_PER_QUEUE.get() {
        0 => None,
        n if n > 0 => Some(n as u32),
        _ => Some(
            std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1) as u32,
        ),
    }
}

pub fn launcher_database() -> String {
    string(&DATABASE).unwrap_or_else(|| "postgres".into())
}

pub fn worker_run_seconds() -> i32 {
    WORKER_RUN_SECONDS.get()
}

// ---------------------------------------------------------------- definitions

/// Define every setting (from `_PG_init`), area by area, then reserve the prefix.
pub fn init() {
    define_sqs();
    define_credentials();
    define_loader();
    define_workers();
    // SAFETY: a plain call at library load time.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"sqs_loader".as_ptr()) };
}

fn user_string(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    s: &'static GucSetting<Option<CString>>,
) {
    GucRegistry::define_string_guc(
        name,
        short,
        long,
        s,
        GucContext::Userset,
        GucFlags::default(),
    );
}

fn int(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    s: &'static GucSetting<i32>,
    (min, max): (i32, i32),
    context: GucContext,
    flags: GucFlags,
) {
    GucRegistry::define_int_guc(name, short, long, s, min, max, context, flags);
}

fn define_sqs() {
    user_string(
        c"sqs_loader.queue_url",
        c"Queue URL load_user_logins() reads when called without one.",
        c"AWS: https://sqs.<region>.amazonaws.com/<account>/<name>; LocalStack: http://localhost:4566/000000000000/<name>.",
        &QUEUE_URL,
    );
    GucRegistry::define_string_guc(
        c"sqs_loader.endpoint",
        c"Send every SQS request to this endpoint (scheme://host[:port]) instead of the queue URL's host.",
        c"Empty: use the queue URL's host. Also used by sqs_create_queue(). Superuser only: it decides where requests go.",
        &ENDPOINT,
        GucContext::Suset,
        GucFlags::default(),
    );
    user_string(
        c"sqs_loader.region",
        c"Signing region when the endpoint host does not name one (LocalStack, custom endpoints).",
        c"",
        &REGION,
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
        c"Comma-separated hosts SQS requests may go to: exact names (any address), *.suffix or * (public addresses only).",
        c"Keeps roles allowed to call the sqs_* functions from making the server talk to other hosts. A host listed exactly may resolve to loopback or a private network (emulators, VPC endpoints); a wildcard allows public addresses only.",
        &ALLOWED_HOSTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the hook is a plain function with the signature Postgres expects.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"sqs_loader.proxy",
            c"HTTP CONNECT proxy for SQS and STS requests: http://[user:password@]host[:port]. Empty: none.",
            c"The server's HTTP_PROXY, HTTPS_PROXY and ALL_PROXY are ignored. The target's name is resolved by the server, so sqs_loader.allowed_hosts' address check still applies, and the proxy is asked for the address. Credential endpoints (container, instance metadata) are never proxied. Superuser only; hidden from other roles.",
            &PROXY,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            Some(proxy_check_hook),
            None,
            None,
        );
    }
    int(
        c"sqs_loader.http_timeout_ms",
        c"Timeout of one SQS HTTP request, in milliseconds (long-poll waits are added to it).",
        c"",
        &HTTP_TIMEOUT_MS,
        (100, 600_000),
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    int(
        c"sqs_loader.max_parallel_requests",
        c"Most SQS requests one call keeps in flight at once.",
        c"A loader keeps fewer while fewer do (sqs_loader.adapt_requests).",
        &MAX_PARALLEL_REQUESTS,
        (1, 64),
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"sqs_loader.adapt_requests",
        c"Whether a loader keeps fewer than max_parallel_requests in flight while fewer do.",
        c"While the next batch's receive finishes in under 40 % of the current batch's load, its receives and deletes get one request fewer; over 70 %, more again. Off: always max_parallel_requests.",
        &ADAPT_REQUESTS,
        GucContext::Userset,
        GucFlags::default(),
    );
    int(
        c"sqs_loader.max_retries",
        c"Retries of a request after 5xx, throttling or connection errors (exponential backoff with jitter).",
        c"",
        &MAX_RETRIES,
        (0, 10),
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Whether a setting's value from `source` is stored where other roles can read it: `ALTER
/// DATABASE/ROLE ... SET` (the world-readable pg_db_role_setting) and function `SET` clauses
/// (pg_proc.proconfig, validated with source PGC_S_TEST).
fn readable_by_others(source: pg_sys::GucSource::Type) -> bool {
    matches!(
        source,
        pg_sys::GucSource::PGC_S_TEST
            | pg_sys::GucSource::PGC_S_DATABASE
            | pg_sys::GucSource::PGC_S_USER
            | pg_sys::GucSource::PGC_S_DATABASE_USER
            | pg_sys::GucSource::PGC_S_GLOBAL
    )
}

/// The new value of a string setting in a check hook (empty for NULL).
///
/// # Safety
/// `newval` as Postgres passes it to a string check hook.
unsafe fn check_hook_value<'a>(newval: *mut *mut std::ffi::c_char) -> &'a CStr {
    if newval.is_null() || (*newval).is_null() {
        c""
    } else {
        CStr::from_ptr(*newval)
    }
}

/// Fail a check hook with `code`, a message and a hint.
///
/// # Safety
/// Only from a GUC check hook.
unsafe fn check_hook_error(code: pgrx::PgSqlErrorCode, message: &CStr, hint: &CStr) -> bool {
    pg_sys::GUC_check_errcode(code as i32);
    pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(message.as_ptr());
    pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
    false
}

/// Refuse to take an AWS secret from a source that other roles can read.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn secret_check_hook(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    if check_hook_value(newval).is_empty() || !readable_by_others(source) {
        return true;
    }
    check_hook_error(
        pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        c"AWS credentials cannot be stored with ALTER DATABASE/ROLE SET or a function SET clause",
        c"Those are readable by every role. Use the server environment, an instance role, postgresql.conf or ALTER SYSTEM.",
    )
}

/// `sqs_loader.proxy`: a URL [`crate::sqs::http::proxy`] takes, and a user or password only
/// from a source other roles cannot read.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn proxy_check_hook(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    let value = check_hook_value(newval).to_string_lossy();
    if value.trim().is_empty() {
        return true;
    }
    let proxy = match crate::sqs::http::proxy(&value) {
        Ok(p) => p,
        Err(why) => {
            let message = CString::new(format!("invalid value for sqs_loader.proxy: {why}"))
                .unwrap_or_default();
            return check_hook_error(
                pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                &message,
                c"Give an HTTP CONNECT proxy as http://host:port or http://user:password@host:port.",
            );
        }
    };
    // The secret of the URL: its password, or a user name given alone (a token).
    let Some(secret) = proxy.password().or(proxy.username()) else {
        return true;
    };
    // Masked in this statement's text (the log's STATEMENT line, pg_stat_activity) and in
    // this session's later log lines, as the secrets given to the functions are.
    if pg_sys::IsUnderPostmaster {
        log_guard::protect_statement(&[secret.as_bytes()]);
    }
    if readable_by_others(source) {
        return check_hook_error(
            pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            c"a proxy's user or password cannot be stored with ALTER DATABASE/ROLE SET or a function SET clause",
            c"Those are readable by every role. Use postgresql.conf or ALTER SYSTEM.",
        );
    }
    true
}

fn define_secret(
    name: &'static CStr,
    short: &'static CStr,
    setting: &'static GucSetting<Option<CString>>,
) {
    // SAFETY: the hook is a plain function with the signature Postgres expects.
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

fn define_credentials() {
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
    for (name, short, long, setting) in [
        (
            c"sqs_loader.role_arn",
            c"An IAM role to assume (STS AssumeRole) with the credentials the chain found, e.g. a queue owner's role in another account.",
            c"Empty: use the chain's credentials as they are. Superuser only.",
            &ROLE_ARN,
        ),
        (
            c"sqs_loader.role_external_id",
            c"The external id sqs_loader.role_arn's trust policy requires.",
            c"Superuser only.",
            &ROLE_EXTERNAL_ID,
        ),
        (
            c"sqs_loader.sts_endpoint",
            c"STS endpoint for sqs_loader.role_arn (scheme://host[:port]).",
            c"Empty: https://sts.<sqs_loader.region>.amazonaws.com. Superuser only.",
            &STS_ENDPOINT,
        ),
    ] {
        GucRegistry::define_string_guc(
            name,
            short,
            long,
            setting,
            GucContext::Suset,
            GucFlags::default(),
        );
    }
}

fn define_loader() {
    let user = |name, short, long, s, range| {
        int(
            name,
            short,
            long,
            s,
            range,
            GucContext::Userset,
            GucFlags::default(),
        )
    };
    user(
        c"sqs_loader.batch_size",
        c"Messages load_user_logins() pulls and commits per transaction.",
        c"",
        &BATCH_SIZE,
        (1, 10_000),
    );
    user(
        c"sqs_loader.visibility_timeout",
        c"Visibility timeout (seconds) load_user_logins() asks for; 0 uses the queue's own.",
        c"Must exceed about two batches' time: a batch received ahead of time (prefetched) waits while the current one loads. If it expires, another loader may receive the message (it is then skipped, not duplicated).",
        &VISIBILITY_TIMEOUT,
        (0, 43_200),
    );
    user(
        c"sqs_loader.wait_seconds",
        c"Long-poll wait (seconds) of load_user_logins()'s receives.",
        c"",
        &WAIT_SECONDS,
        (0, 20),
    );
    user(
        c"sqs_loader.max_seconds",
        c"Default time limit (seconds) of one load_user_logins() run.",
        c"Under a minute so that per-minute pg_cron runs do not overlap much.",
        &MAX_SECONDS,
        (1, 86_400),
    );
    user(
        c"sqs_loader.max_messages",
        c"Default message limit of one load_user_logins() run; 0 means no limit.",
        c"",
        &MAX_MESSAGES,
        (0, i32::MAX),
    );
    GucRegistry::define_bool_guc(
        c"sqs_loader.exit_when_empty",
        c"Whether load_user_logins() returns as soon as a receive finds the queue empty.",
        c"Off: keep long-polling until max_seconds (continuous consumption from pg_cron).",
        &EXIT_WHEN_EMPTY,
        GucContext::Userset,
        GucFlags::default(),
    );
    int(
        c"sqs_loader.dedup_retention_days",
        c"Days the ids of loaded messages are kept to recognise redeliveries (more than SQS's 14-day maximum retention).",
        c"",
        &DEDUP_RETENTION_DAYS,
        (15, 3650),
        GucContext::Suset,
        GucFlags::default(),
    );
    user(
        c"sqs_loader.poison_receive_count",
        c"Receives of a message (its ApproximateReceiveCount) after which its batch is loaded one message at a time, and a message that fails alone is rejected as load_failed; 0: never.",
        c"Keep it below the maxReceiveCount of the queue's redrive policy, so the loader sees the message before SQS moves it to the dead-letter queue.",
        &POISON_RECEIVE_COUNT,
        (0, 1000),
    );
    user(
        c"sqs_loader.known_tokens",
        c"Tokens a backend remembers as stored in the vault, so that a value it has stored before is neither sealed nor upserted again (about 40 bytes each); 0: none.",
        c"Only values stored by committed transactions count; a vault replaced as a whole (TRUNCATE, a new extension) is noticed. When full, it starts over.",
        &KNOWN_TOKENS,
        (0, 10_000_000),
    );
    user(
        c"sqs_loader.max_runs_per_queue",
        c"Runs of one queue that load at a time in a database; a run started beyond them waits for one to end. -1: half the server's CPUs, at least 1; 0: no limit.",
        c"Each loading run keeps a backend and its I/O threads busy; beyond the cores there are, concurrent runs of one queue only take CPU from each other (and from an emulator on the same host).",
        &MAX_RUNS_PER_QUEUE,
        (-1, 1000),
    );
    user(
        c"sqs_loader.progress_seconds",
        c"Seconds between progress NOTICEs of a long load_user_logins() run.",
        c"",
        &PROGRESS_SECONDS,
        (1, 3600),
    );
}

fn define_workers() {
    GucRegistry::define_string_guc(
        c"sqs_loader.database",
        c"Database the background-worker launcher connects to at server start, to list the databases to start supervisors in.",
        c"Any database that exists; the workers themselves run in the databases where start_worker() was called.",
        &DATABASE,
        // Not Postmaster: a session that loads the library late could not define it then.
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"sqs_loader.worker_run_seconds",
        c"Seconds a background worker's run lasts before it is recorded in sqs_loader.load_runs and the next begins.",
        c"",
        &WORKER_RUN_SECONDS,
        (10, 86_400),
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

//! Settings → [`Client`]: where a call goes, with which credentials and options, checked
//! against the host allow-list. Runs on the backend's thread (it reads GUCs); the client it
//! returns is plain Rust and goes to the I/O threads.

use super::error::Error;
use super::guc;
use super::plans;
use crate::sqs::credentials::Env;
use crate::sqs::endpoint::{self, Endpoint};
use crate::sqs::executor::Client;
use crate::sqs::http;
use crate::sqs::SqsError;
use pgrx::Spi;

/// Where AWS credentials or a proxy URL with a password were stored with `ALTER ROLE/DATABASE
/// … SET` (in the world-readable pg_db_role_setting): "role r", "database d", "role r in
/// database d". The check hooks refuse that only in sessions where the library is loaded; this
/// finds what got through elsewhere. A failure of the check itself refuses the call too.
fn secrets_in_catalog() -> Result<Vec<String>, Error> {
    // Schema-qualified, operators included: it must not depend on the caller's search_path.
    Spi::connect(|c| {
        plans::select(
            c,
            "SELECT pg_catalog.concat_ws(' in ',
                        'role ' OPERATOR(pg_catalog.||) r.rolname::text,
                        'database ' OPERATOR(pg_catalog.||) d.datname::text)
               FROM pg_catalog.pg_db_role_setting s
               LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) s.setrole
               LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.setdatabase
              WHERE EXISTS (SELECT 1 FROM pg_catalog.unnest(s.setconfig) AS c(setting)
                             CROSS JOIN LATERAL pg_catalog.lower(c.setting) AS l(setting)
                             WHERE pg_catalog.starts_with(l.setting, 'sqs_loader.aws_')
                                OR (pg_catalog.starts_with(l.setting, 'sqs_loader.proxy=')
                                    AND pg_catalog.strpos(l.setting, '@') OPERATOR(pg_catalog.>) 0))",
            None,
            &[],
        )?
        .filter_map(|r| r.get::<String>(1).transpose())
        .collect::<Result<Vec<String>, _>>()
    })
    .map_err(|e| Error::Internal(format!("looking for secrets stored in pg_db_role_setting: {e}")))
}

fn client(mut endpoint: Endpoint) -> Result<Client, Error> {
    let exposed = secrets_in_catalog()?;
    if !exposed.is_empty() {
        return Err(Error::SecretInCatalog(exposed.join(", ")));
    }
    endpoint.addresses = endpoint::host_allowed(&endpoint.host, &guc::allowed_hosts())
        .ok_or_else(|| SqsError::HostNotAllowed(endpoint.host.clone()))?;
    let proxy = guc::proxy()
        .map(|url| http::proxy(&url))
        .transpose()
        .map_err(|why| SqsError::InvalidArgument(format!("sqs_loader.proxy: {why}")))?;
    endpoint.proxy = proxy.clone();
    Ok(Client {
        endpoint,
        configured: guc::configured_credentials(proxy),
        env: Env::from_process(),
        opts: guc::call_options(),
        max_parallel: guc::max_parallel_requests(),
    })
}

/// The client for calls on a queue: its URL's host, or `sqs_loader.endpoint`.
pub fn for_queue(queue_url: &str) -> Result<Client, Error> {
    client(endpoint::for_queue_url(
        queue_url,
        guc::endpoint_override().as_deref(),
        &guc::region(),
    )?)
}

/// The client for calls without a queue (CreateQueue): `sqs_loader.endpoint`, else the host of
/// `sqs_loader.queue_url`, else AWS in `sqs_loader.region`.
pub fn for_service() -> Result<Client, Error> {
    client(endpoint::for_service(
        guc::endpoint_override().as_deref(),
        guc::queue_url().as_deref(),
        &guc::region(),
    )?)
}

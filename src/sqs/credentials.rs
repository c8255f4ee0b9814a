//! The AWS credential provider chain: settings → process environment → ECS/EKS container
//! endpoint → EC2 instance metadata (IMDSv2). HTTP-based results are cached until shortly
//! before they expire.

use super::SqsError;
use serde::Deserialize;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Credentials are refreshed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
const IMDS_DEFAULT: &str = "http://169.254.169.254";
const ECS_RELATIVE_HOST: &str = "http://169.254.170.2";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expires_at: Option<SystemTime>,
    /// Which provider gave them (for messages; never the values).
    pub provider: &'static str,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .field("expires_at", &self.expires_at)
            .field("provider", &self.provider)
            .finish()
    }
}

impl Credentials {
    fn fresh(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|t| t > now + REFRESH_MARGIN)
    }

    /// The secret strings that must never appear in a message.
    pub fn secrets(&self) -> Vec<&str> {
        let mut v = vec![self.secret_access_key.as_str()];
        if let Some(t) = &self.session_token {
            v.push(t.as_str());
        }
        v
    }
}

/// The environment variables the chain reads, captured once (so tests can supply their own).
#[derive(Debug, Clone, Default)]
pub struct Env(pub Vec<(String, String)>);

pub const ENV_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

impl Env {
    pub fn from_process() -> Env {
        Env(ENV_VARS
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect())
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// What the settings say: static credentials (`sqs_loader.aws_*`), and a role to assume on top
/// of whatever the chain finds (`sqs_loader.role_arn`, `role_external_id`, `sts_endpoint`).
#[derive(Clone, Default)]
pub struct Configured {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub role_arn: Option<String>,
    pub role_external_id: Option<String>,
    pub sts_endpoint: Option<String>,
    /// `sqs_loader.region`: the STS region when `sts_endpoint` does not name one.
    pub region: String,
    /// `sqs_loader.proxy`: STS requests go through it; credential endpoints (container,
    /// instance metadata) never do.
    pub proxy: Option<ureq::Proxy>,
}

/// The cache for credentials that came over HTTP (container endpoint or instance metadata).
static CACHE: Mutex<Option<Credentials>> = Mutex::new(None);

/// The assumed role's credentials, with what they were made from (role, external id, the
/// access key that assumed it).
static ROLE_CACHE: Mutex<Option<(String, Credentials)>> = Mutex::new(None);

/// Forget cached credentials (after the provider rejected them, or in tests).
pub fn clear_cache() {
    *CACHE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *ROLE_CACHE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Resolve credentials: the first provider of the chain that yields wins; with
/// `sqs_loader.role_arn`, they then assume that role.
pub fn resolve(
    configured: &Configured,
    env: &Env,
    agent: &ureq::Agent,
) -> Result<Credentials, SqsError> {
    let base = resolve_chain(configured, env, agent)?;
    let Some(role) = configured.role_arn.as_deref() else {
        return Ok(base);
    };
    let key = format!(
        "{role}\n{}\n{}",
        configured.role_external_id.as_deref().unwrap_or_default(),
        base.access_key_id
    );
    if let Some((k, c)) = ROLE_CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        if *k == key && c.fresh(SystemTime::now()) {
            return Ok(c.clone());
        }
    }
    let c = assume_role(configured, role, &base, agent)?;
    *ROLE_CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, c.clone()));
    Ok(c)
}

/// STS AssumeRole, signed with `base`.
fn assume_role(
    configured: &Configured,
    role_arn: &str,
    base: &Credentials,
    agent: &ureq::Agent,
) -> Result<Credentials, SqsError> {
    const P: &str = "sqs_loader.role_arn (STS AssumeRole)";
    let endpoint = configured
        .sts_endpoint
        .as_deref()
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", configured.region));
    let host = endpoint.split("://").nth(1).unwrap_or_default();
    let region =
        super::endpoint::region_from_host(host.split(['/', ':']).next().unwrap_or_default())
            .unwrap_or_else(|| configured.region.clone());
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", "AssumeRole")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role_arn)
        .append_pair(
            "RoleSessionName",
            &format!("sqs_loader-{}", std::process::id()),
        );
    if let Some(x) = &configured.role_external_id {
        form.append_pair("ExternalId", x);
    }
    let req = super::wire::HttpRequest {
        path: "/",
        headers: vec![(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )],
        body: form.finish().into_bytes(),
    };
    let url = format!("{endpoint}/");
    let signed =
        super::sign::signed_headers_for("sts", &req, &url, base, &region, SystemTime::now())?;
    let mut r = agent
        .post(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .proxy(configured.proxy.clone())
        .build();
    for (k, v) in req
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(signed)
    {
        r = r.header(k, v);
    }
    let mut resp = r
        .send(&req.body[..])
        .map_err(|e| http_fail(P, "request failed", e))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| http_fail(P, "reading the response", e))?;
    sts_credentials(&body, status, P)
}

fn resolve_chain(
    configured: &Configured,
    env: &Env,
    agent: &ureq::Agent,
) -> Result<Credentials, SqsError> {
    match (&configured.access_key_id, &configured.secret_access_key) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            return Ok(Credentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: configured.session_token.clone().filter(|t| !t.is_empty()),
                expires_at: None,
                provider: "sqs_loader.aws_* settings",
            })
        }
        (Some(id), _) if !id.is_empty() => return Err(SqsError::Credentials {
            provider: "sqs_loader.aws_* settings",
            message:
                "sqs_loader.aws_access_key_id is set but sqs_loader.aws_secret_access_key is not"
                    .into(),
        }),
        (_, Some(s)) if !s.is_empty() => return Err(SqsError::Credentials {
            provider: "sqs_loader.aws_* settings",
            message:
                "sqs_loader.aws_secret_access_key is set but sqs_loader.aws_access_key_id is not"
                    .into(),
        }),
        _ => {}
    }
    if let (Some(id), Some(secret)) = (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(Credentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: env.get("AWS_SESSION_TOKEN").map(str::to_string),
            expires_at: None,
            provider: "environment",
        });
    }
    let now = SystemTime::now();
    if let Some(c) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if c.fresh(now) {
            return Ok(c.clone());
        }
    }
    let mut tried = vec!["sqs_loader.aws_* settings", "environment"];
    let fetched = if let (Some(role), Some(file)) = (
        env.get("AWS_ROLE_ARN"),
        env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
    ) {
        Some(web_identity(configured, env, role, file, agent)?)
    } else if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    {
        Some(container(env, agent)?)
    } else {
        tried.push("web identity (not configured)");
        tried.push("container endpoint (not configured)");
        if env
            .get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            tried.push("EC2 instance metadata (disabled)");
            None
        } else {
            match imds(env, agent) {
                Ok(c) => Some(c),
                Err(ImdsError::Unavailable(why)) => {
                    tried.push("EC2 instance metadata");
                    return Err(SqsError::NoCredentials(format!(
                        "{}: {why}",
                        tried.join(", ")
                    )));
                }
                Err(ImdsError::Failed(e)) => return Err(e),
            }
        }
    };
    match fetched {
        Some(c) => {
            *CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
            Ok(c)
        }
        None => Err(SqsError::NoCredentials(tried.join(", "))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HttpCreds {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
    code: Option<String>,
}

fn to_credentials(c: HttpCreds, provider: &'static str) -> Result<Credentials, SqsError> {
    if let Some(code) = &c.code {
        if code != "Success" {
            return Err(SqsError::Credentials {
                provider,
                message: format!("the endpoint answered with code {code}"),
            });
        }
    }
    let expires_at = match &c.expiration {
        Some(s) => Some(parse_rfc3339(s).ok_or_else(|| SqsError::Credentials {
            provider,
            message: format!("unparseable Expiration \"{s}\""),
        })?),
        None => None,
    };
    Ok(Credentials {
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
        session_token: c.token,
        expires_at,
        provider,
    })
}

fn http_fail(provider: &'static str, what: &str, e: impl fmt::Display) -> SqsError {
    SqsError::Credentials {
        provider,
        message: format!("{what}: {e}"),
    }
}

/// ECS task role / EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`.
fn container(env: &Env, agent: &ureq::Agent) -> Result<Credentials, SqsError> {
    const P: &str = "container credentials endpoint";
    let url = match env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        Some(rel) => format!("{ECS_RELATIVE_HOST}{rel}"),
        None => {
            let full = env
                .get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                .unwrap_or_default()
                .to_string();
            let uri: http::Uri = full
                .parse()
                .map_err(|_| http_fail(P, "AWS_CONTAINER_CREDENTIALS_FULL_URI", "not a URL"))?;
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string();
            let allowed = uri.scheme_str() == Some("https")
                || host == "localhost"
                || host == "169.254.170.2"
                || host == "169.254.170.23"
                || host.eq_ignore_ascii_case("fd00:ec2::23")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !allowed {
                return Err(http_fail(
                    P,
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "plain http is only allowed to loopback or the ECS/EKS link-local addresses",
                ));
            }
            full
        }
    };
    let token = match env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| http_fail(P, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", e))?
                .trim()
                .to_string(),
        ),
        None => env
            .get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
            .map(str::to_string),
    };
    let mut req = agent
        .get(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(5)))
        .build();
    if let Some(t) = &token {
        req = req.header("authorization", t);
    }
    let mut resp = req.call().map_err(|e| http_fail(P, "request failed", e))?;
    if resp.status() != 200 {
        return Err(http_fail(
            P,
            "request failed",
            format!("HTTP status {}", resp.status()),
        ));
    }
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| http_fail(P, "reading the response", e))?;
    let c: HttpCreds = serde_json::from_str(&body)
        .map_err(|_| http_fail(P, "bad response", "not a credentials document"))?;
    to_credentials(c, "container credentials endpoint")
}

/// EKS IRSA (and any OIDC federation): `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, exchanged
/// with STS AssumeRoleWithWebIdentity (an unsigned call: the token is the proof). The token file
/// is read at every exchange (the kubelet rotates it); the credentials are cached and refreshed
/// before they expire. STS is `AWS_ENDPOINT_URL_STS`, else the regional endpoint of `AWS_REGION`.
fn web_identity(
    configured: &Configured,
    env: &Env,
    role_arn: &str,
    token_file: &str,
    agent: &ureq::Agent,
) -> Result<Credentials, SqsError> {
    const P: &str = "web identity (STS AssumeRoleWithWebIdentity)";
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| http_fail(P, "cannot read AWS_WEB_IDENTITY_TOKEN_FILE", e))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(http_fail(
            P,
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "the file is empty",
        ));
    }
    let endpoint = match env.get("AWS_ENDPOINT_URL_STS") {
        Some(e) => e.trim_end_matches('/').to_string(),
        None => {
            let region = env
                .get("AWS_REGION")
                .or_else(|| env.get("AWS_DEFAULT_REGION"))
                .unwrap_or("us-east-1");
            format!("https://sts.{region}.amazonaws.com")
        }
    };
    let session = env
        .get("AWS_ROLE_SESSION_NAME")
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqs_loader-{}", std::process::id()));
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role_arn)
        .append_pair("RoleSessionName", &session)
        .append_pair("WebIdentityToken", &token)
        .finish();
    let secrets = [token.as_str()];
    let mut resp = agent
        .post(&format!("{endpoint}/"))
        .config()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .proxy(configured.proxy.clone())
        .build()
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .map_err(|e| {
            http_fail(
                P,
                "request failed",
                super::http::redact(&e.to_string(), &secrets),
            )
        })?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| http_fail(P, "reading the response", e))?;
    sts_credentials(&body, status, P).map_err(|e| match e {
        SqsError::Credentials { provider, message } => SqsError::Credentials {
            provider,
            message: super::http::redact(&message, &secrets),
        },
        other => other,
    })
}

/// The credentials of an STS AssumeRole* response (or its error, as the message).
pub fn sts_credentials(
    body: &str,
    status: u16,
    provider: &'static str,
) -> Result<Credentials, SqsError> {
    let doc = super::xml::parse(body).map_err(|_| {
        http_fail(
            provider,
            "bad response",
            format!("HTTP status {status}, not an STS document"),
        )
    })?;
    if let Some(err) = doc.find("Error") {
        return Err(http_fail(
            provider,
            err.child_text("Code").unwrap_or("error"),
            err.child_text("Message").unwrap_or_default(),
        ));
    }
    let c = doc.find("Credentials").ok_or_else(|| {
        http_fail(
            provider,
            "bad response",
            format!("HTTP status {status}, no Credentials"),
        )
    })?;
    let field = |n: &str| {
        c.child_text(n)
            .map(str::to_string)
            .ok_or_else(|| http_fail(provider, "bad response", format!("no {n}")))
    };
    to_credentials(
        HttpCreds {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            token: Some(field("SessionToken")?),
            expiration: Some(field("Expiration")?),
            code: None,
        },
        provider,
    )
}

enum ImdsError {
    /// Not on EC2 (or IMDS unreachable): the chain simply has no credentials.
    Unavailable(String),
    /// IMDS answered but something is wrong.
    Failed(SqsError),
}

/// EC2 instance role via IMDSv2 (session token first, as IMDSv1 is often disabled).
fn imds(env: &Env, agent: &ureq::Agent) -> Result<Credentials, ImdsError> {
    const P: &str = "EC2 instance metadata";
    let base = env
        .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or(IMDS_DEFAULT)
        .trim_end_matches('/')
        .to_string();
    let timeout = Some(Duration::from_secs(2));
    let token = agent
        .put(format!("{base}/latest/api/token"))
        .config()
        .timeout_global(timeout)
        .build()
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send_empty()
        .map_err(|e| ImdsError::Unavailable(format!("{base} unreachable ({e})")))
        .and_then(|mut r| {
            if r.status() != 200 {
                return Err(ImdsError::Unavailable(format!(
                    "token request answered HTTP {}",
                    r.status()
                )));
            }
            r.body_mut()
                .read_to_string()
                .map_err(|e| ImdsError::Failed(http_fail(P, "reading the token", e)))
        })?;
    let get = |path: &str| -> Result<String, ImdsError> {
        let mut r = agent
            .get(format!("{base}{path}"))
            .config()
            .timeout_global(timeout)
            .build()
            .header("x-aws-ec2-metadata-token", token.trim())
            .call()
            .map_err(|e| ImdsError::Failed(http_fail(P, "request failed", e)))?;
        match r.status().as_u16() {
            200 => r
                .body_mut()
                .read_to_string()
                .map_err(|e| ImdsError::Failed(http_fail(P, "reading the response", e))),
            404 => Err(ImdsError::Unavailable(
                "the instance has no IAM role".into(),
            )),
            s => Err(ImdsError::Failed(http_fail(
                P,
                "request failed",
                format!("HTTP status {s}"),
            ))),
        }
    };
    let roles = get("/latest/meta-data/iam/security-credentials/")?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| ImdsError::Unavailable("the instance has no IAM role".into()))?
        .to_string();
    let doc = get(&format!(
        "/latest/meta-data/iam/security-credentials/{role}"
    ))?;
    let c: HttpCreds = serde_json::from_str(&doc).map_err(|_| {
        ImdsError::Failed(http_fail(P, "bad response", "not a credentials document"))
    })?;
    to_credentials(c, "EC2 instance metadata").map_err(ImdsError::Failed)
}

/// Parse `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into a SystemTime (milliseconds kept).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let ms = crate::rfc3339::parse_ms(s.trim())?;
    u64::try_from(ms)
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;

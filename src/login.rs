//! Login events: parse, validate and flatten an SQS message body. Plain Rust.
//!
//! A message is a login event when it is a JSON object (no duplicated keys) with
//! - `user_id`: a non-empty string of at most 128 characters;
//! - `device_type`, `locale`: null/absent, or strings of at most 32 characters;
//! - `ip`: an IPv4 or IPv6 address (stored masked, in canonical form: an IPv4-mapped IPv6
//!   address is its IPv4 address);
//! - `device_id`: a non-empty string (stored masked);
//! - `app_version`: a version string "major[.minor[.patch]]", packed into an integer.
//!
//! Other keys are ignored, whatever valid JSON they hold (numbers of any size, any nesting); a
//! leading byte order mark is ignored. No string may contain NUL (PostgreSQL text cannot hold it).
//! Anything else is rejected with a stable reason code and a human-readable detail.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

pub const MAX_USER_ID: usize = 128;
pub const MAX_SHORT: usize = 32;
pub const MAX_MAJOR: u32 = 2146;
pub const MAX_MINOR: u32 = 999;
pub const MAX_PATCH: u32 = 999;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    pub user_id: String,
    pub device_type: Option<String>,
    /// Canonical text form of the address (e.g. IPv6 lower-case, compressed).
    pub ip: String,
    pub locale: Option<String>,
    pub device_id: String,
    pub app_version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code, e.g. `invalid_ip`; see [`REASONS`].
    pub reason: &'static str,
    pub detail: String,
}

/// Every rejection reason, with what it means (documented, and exposed in SQL).
pub const REASONS: &[(&str, &str)] = &[
    (
        "invalid_json",
        "the body is not valid JSON (or not valid UTF-8 text inside JSON strings)",
    ),
    (
        "not_an_object",
        "the body is JSON but not an object (an array, string, number, boolean or null)",
    ),
    (
        "duplicate_key",
        "the object has the same key twice (ambiguous: parsers disagree on which wins)",
    ),
    ("missing_user_id", "no user_id"),
    (
        "invalid_user_id",
        "user_id is not a string, is empty, is longer than 128 characters or contains NUL",
    ),
    (
        "invalid_device_type",
        "device_type is not a string or null, is longer than 32 characters or contains NUL",
    ),
    (
        "invalid_locale",
        "locale is not a string or null, is longer than 32 characters or contains NUL",
    ),
    ("missing_ip", "no ip"),
    (
        "invalid_ip",
        "ip is not a string holding an IPv4 or IPv6 address (zone ids are not accepted)",
    ),
    ("missing_device_id", "no device_id"),
    (
        "invalid_device_id",
        "device_id is not a non-empty string, or contains NUL",
    ),
    ("missing_app_version", "no app_version"),
    (
        "invalid_app_version",
        "app_version is not a string of 1 to 3 dot-separated decimal numbers",
    ),
    (
        "app_version_out_of_range",
        "app_version does not fit the integer encoding (major <= 2146, minor and patch <= 999)",
    ),
    (
        "insert_failed",
        "a valid event that user_logins refused (a column narrower than these limits, a CHECK constraint, a trigger that raised): the detail has the SQLSTATE and message",
    ),
    (
        "load_failed",
        "a poison message: its batch failed sqs_loader.poison_receive_count times, and loaded one at a time this message failed alone (any error but a cancel, a lost connection or a lack of resources): the detail has the SQLSTATE and message",
    ),
];

fn reject(reason: &'static str, detail: impl Into<String>) -> Rejection {
    debug_assert!(REASONS.iter().any(|(r, _)| *r == reason));
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// A JSON value as the parser sees it: what the known keys need, without interpreting the rest.
/// Values are captured raw (`RawValue`: validated, but numbers not converted and nesting not
/// limited), so valid JSON anywhere in the body never makes it `invalid_json`.
enum Field {
    Str(String),
    Null,
    Other(&'static str),
}

/// Interpret one raw value (only values of known keys are interpreted).
fn field(raw: &RawValue) -> Result<Field, Rejection> {
    let text = raw.get().trim_start();
    Ok(match text.as_bytes().first() {
        Some(b'"') => Field::Str(
            serde_json::from_str::<String>(text)
                .map_err(|e| reject("invalid_json", format!("not valid JSON: {e}")))?,
        ),
        Some(b'n') => Field::Null,
        Some(b't') | Some(b'f') => Field::Other("a boolean"),
        Some(b'[') => Field::Other("an array"),
        Some(b'{') => Field::Other("an object"),
        _ => Field::Other("a number"),
    })
}

fn kind(f: &Field) -> &'static str {
    match f {
        Field::Str(_) => "a string",
        Field::Null => "null",
        Field::Other(k) => k,
    }
}

/// The top level of a body: an object's entries in order (to detect duplicates), values raw.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            entries.push((k, map.next_value::<&'de RawValue>()?));
        }
        Ok(Entries(entries))
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entries<'de>, D::Error> {
        d.deserialize_map(EntriesVisitor)
    }
}

/// Parse and validate one message body.
pub fn parse(body: &str) -> Result<LoginEvent, Rejection> {
    event_from(&entries_of(body)?)
}

/// A body's top-level entries, in order (values raw): not JSON, not an object or a key twice is
/// a rejection.
fn entries_of(body: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, Rejection> {
    // RFC 8259 lets a parser ignore a leading byte order mark; some producers send one.
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let invalid = |e: serde_json::Error| reject("invalid_json", format!("not valid JSON: {e}"));
    if body.trim_start().as_bytes().first() != Some(&b'{') {
        // Valid JSON but not an object, or not JSON at all.
        let raw = serde_json::from_str::<&RawValue>(body).map_err(invalid)?;
        let what = match field(raw)? {
            Field::Str(_) => "a string",
            Field::Null => "null",
            Field::Other(k) => k,
        };
        return Err(reject(
            "not_an_object",
            format!("the body is {what}, not a JSON object"),
        ));
    }
    let Entries(entries) = serde_json::from_str::<Entries>(body).map_err(invalid)?;
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (k, _) in &entries {
        if !seen.insert(k.as_ref()) {
            return Err(reject(
                "duplicate_key",
                format!("key \"{}\" appears more than once", truncate(k, 40)),
            ));
        }
    }
    Ok(entries)
}

/// The login event the entries of an object make.
fn event_from(entries: &[(Cow<'_, str>, &RawValue)]) -> Result<LoginEvent, Rejection> {
    let get = |name: &str| -> Result<Option<Field>, Rejection> {
        entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| field(v))
            .transpose()
    };

    let user_id = match get("user_id")? {
        None => {
            return Err(reject(
                "missing_user_id",
                "the object has no user_id (not a login event)",
            ))
        }
        Some(v) => required_string(v, "user_id", "invalid_user_id", Some(MAX_USER_ID))?,
    };
    let device_type = optional_string(get("device_type")?, "device_type", "invalid_device_type")?;
    let locale = optional_string(get("locale")?, "locale", "invalid_locale")?;
    let ip = match get("ip")? {
        None => return Err(reject("missing_ip", "the object has no ip")),
        Some(Field::Str(s)) => canonical_ip(&s)?,
        Some(v) => {
            return Err(reject(
                "invalid_ip",
                format!("ip must be a string, not {}", kind(&v)),
            ))
        }
    };
    let device_id = match get("device_id")? {
        None => return Err(reject("missing_device_id", "the object has no device_id")),
        Some(v) => required_string(v, "device_id", "invalid_device_id", None)?,
    };
    let app_version = match get("app_version")? {
        None => {
            return Err(reject(
                "missing_app_version",
                "the object has no app_version",
            ))
        }
        Some(Field::Str(s)) => app_version_to_int(&s)?,
        Some(v) => {
            return Err(reject(
                "invalid_app_version",
                format!(
                    "app_version must be a string such as \"2.3.0\", not {}",
                    kind(&v)
                ),
            ))
        }
    };
    Ok(LoginEvent {
        user_id,
        device_type,
        ip,
        locale,
        device_id,
        app_version,
    })
}

/// How an event arrived wrapped: an SNS notification (a topic subscribed to the queue without raw
/// message delivery: the event is the `Message` string) or an EventBridge event (a rule targeting
/// the queue: the event is the `detail` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `sns` or `eventbridge`.
    pub kind: &'static str,
    /// The envelope's time (SNS `Timestamp`, EventBridge `time`), ms since the Unix epoch, when
    /// it is a valid RFC 3339 time: when the event was published, before SQS had it.
    pub time_ms: Option<i64>,
}

/// A message body made a login event, with the envelope it came in, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub event: LoginEvent,
    pub envelope: Option<Envelope>,
}

/// Parse one SQS message body: a login event, bare or in an SNS or EventBridge envelope. A body
/// is an envelope only when it has no `user_id` and has the envelope's own keys (SNS: `Type` =
/// "Notification", `TopicArn`, `Message` a string; EventBridge: `detail-type`, `source`, `detail`
/// an object), and no key twice. A bad event inside an envelope is rejected with the event's own
/// reason, the detail saying where it was.
pub fn parse_message(body: &str) -> Result<Parsed, Rejection> {
    let entries = entries_of(body)?;
    let Some((envelope, inner, place)) = unwrap_envelope(&entries) else {
        return event_from(&entries).map(|event| Parsed {
            event,
            envelope: None,
        });
    };
    match parse(&inner) {
        Ok(event) => Ok(Parsed {
            event,
            envelope: Some(envelope),
        }),
        Err(r) => Err(Rejection {
            reason: r.reason,
            detail: format!("in {place}: {}", r.detail),
        }),
    }
}

fn unwrap_envelope(
    entries: &[(Cow<'_, str>, &RawValue)],
) -> Option<(Envelope, String, &'static str)> {
    if entries.iter().any(|(k, _)| k == "user_id") {
        return None;
    }
    let get = |name: &str| entries.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let string = |name: &str| match get(name).map(field) {
        Some(Ok(Field::Str(s))) => Some(s),
        _ => None,
    };
    if string("Type").as_deref() == Some("Notification") && get("TopicArn").is_some() {
        let message = string("Message")?;
        let time_ms = string("Timestamp").and_then(|t| crate::rfc3339::parse_ms(&t));
        return Some((
            Envelope {
                kind: "sns",
                time_ms,
            },
            message,
            "the SNS notification's Message",
        ));
    }
    let detail = get("detail")?;
    if detail.get().trim_start().starts_with('{')
        && get("detail-type").is_some()
        && get("source").is_some()
    {
        let time_ms = string("time").and_then(|t| crate::rfc3339::parse_ms(&t));
        return Some((
            Envelope {
                kind: "eventbridge",
                time_ms,
            },
            detail.get().to_string(),
            "the EventBridge event's detail",
        ));
    }
    None
}

/// The canonical text of an IP address: IPv6 compressed and lower-case, and an IPv4-mapped IPv6
/// address (`::ffff:203.0.113.7`) as the IPv4 address it is, so that every spelling of one
/// address gives one token.
fn canonical_ip(s: &str) -> Result<String, Rejection> {
    let ip = s.parse::<IpAddr>().map_err(|_| {
        reject(
            "invalid_ip",
            format!("\"{}\" is not an IPv4 or IPv6 address", truncate(s, 60)),
        )
    })?;
    Ok(match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    })
}

fn truncate(s: &str, max: usize) -> String {
    let mut t: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        t.push('…');
    }
    t.replace('\0', "\\0")
}

fn required_string(
    v: Field,
    field: &str,
    reason: &'static str,
    max: Option<usize>,
) -> Result<String, Rejection> {
    let s = match v {
        Field::Str(s) => s,
        other => {
            return Err(reject(
                reason,
                format!("{field} must be a string, not {}", kind(&other)),
            ))
        }
    };
    check_text(&s, field, reason, max)?;
    if s.is_empty() {
        return Err(reject(reason, format!("{field} is empty")));
    }
    Ok(s)
}

fn optional_string(
    v: Option<Field>,
    field: &str,
    reason: &'static str,
) -> Result<Option<String>, Rejection> {
    match v {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Str(s)) => {
            check_text(&s, field, reason, Some(MAX_SHORT))?;
            Ok(Some(s))
        }
        Some(other) => Err(reject(
            reason,
            format!("{field} must be a string or null, not {}", kind(&other)),
        )),
    }
}

fn check_text(
    s: &str,
    field: &str,
    reason: &'static str,
    max: Option<usize>,
) -> Result<(), Rejection> {
    if s.contains('\0') {
        return Err(reject(reason, format!("{field} contains a NUL character")));
    }
    if let Some(max) = max {
        let n = s.chars().count();
        if n > max {
            return Err(reject(
                reason,
                format!("{field} has {n} characters, more than {max}"),
            ));
        }
    }
    Ok(())
}

/// Pack "major[.minor[.patch]]" as major × 1,000,000 + minor × 1,000 + patch (missing parts 0).
/// Integer order is version order; no two versions share an integer.
pub fn app_version_to_int(s: &str) -> Result<i32, Rejection> {
    let shown = truncate(s, 40);
    let parts: Vec<&str> = s.split('.').collect();
    if s.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(reject(
            "invalid_app_version",
            format!("\"{shown}\" is not a version of 1 to 3 dot-separated decimal numbers"),
        ));
    }
    let num = |p: &str| -> u64 {
        let digits = p.trim_start_matches('0');
        if digits.len() > 9 {
            u64::MAX
        } else {
            digits.parse().unwrap_or(0)
        }
    };
    let vals: Vec<u64> = parts.iter().map(|p| num(p)).collect();
    let (major, minor, patch) = (
        vals[0],
        *vals.get(1).unwrap_or(&0),
        *vals.get(2).unwrap_or(&0),
    );
    if major > MAX_MAJOR as u64 || minor > MAX_MINOR as u64 || patch > MAX_PATCH as u64 {
        return Err(reject(
            "app_version_out_of_range",
            format!(
                "\"{shown}\" does not fit: major must be <= {MAX_MAJOR}, minor and patch <= 999"
            ),
        ));
    }
    Ok((major * 1_000_000 + minor * 1_000 + patch) as i32)
}

/// The canonical "major.minor.patch" of a packed version, or None when out of range.
pub fn app_version_text(v: i32) -> Option<String> {
    if v < 0 || v > (MAX_MAJOR as i32) * 1_000_000 + 999_999 {
        return None;
    }
    Some(format!(
        "{}.{}.{}",
        v / 1_000_000,
        (v / 1_000) % 1_000,
        v % 1_000
    ))
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;

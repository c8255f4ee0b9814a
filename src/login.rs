//! Login events: parse, validate and flatten an SQS message body. Plain Rust.
//!
//! A message is a login event when it is a JSON object (no duplicated keys) with
//! - `user_id`: a non-empty string of at most 128 characters;
//! - `device_type`, `locale`: null/absent, or strings of at most 32 characters;
//! - `ip`: an IPv4 or IPv6 address (stored masked, in canonical form);
//! - `device_id`: a non-empty string (stored masked);
//! - `app_version`: a version string "major[.minor[.patch]]", packed into an integer.
//!
//! Other keys are ignored. No string may contain NUL (PostgreSQL text cannot hold it).
//! Anything else is rejected with a stable reason code and a human-readable detail.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
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
];

fn reject(reason: &'static str, detail: impl Into<String>) -> Rejection {
    debug_assert!(REASONS.iter().any(|(r, _)| *r == reason));
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// The top level of a body: an object's entries in order (to detect duplicates), or what else it was.
enum Top {
    Object(Vec<(String, Value)>),
    Other(&'static str),
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            entries.push((k, v));
        }
        Ok(Top::Object(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other("an array"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
        Ok(Top::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Top, E> {
        Ok(Top::Other("a string"))
    }
    fn visit_unit<E>(self) -> Result<Top, E> {
        Ok(Top::Other("null"))
    }
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse and validate one message body.
pub fn parse(body: &str) -> Result<LoginEvent, Rejection> {
    let entries = match serde_json::from_str::<Top>(body) {
        Ok(Top::Object(e)) => e,
        Ok(Top::Other(what)) => {
            return Err(reject(
                "not_an_object",
                format!("the body is {what}, not a JSON object"),
            ))
        }
        Err(e) => return Err(reject("invalid_json", format!("not valid JSON: {e}"))),
    };
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (k, _) in &entries {
        if !seen.insert(k.as_str()) {
            return Err(reject(
                "duplicate_key",
                format!("key \"{}\" appears more than once", truncate(k, 40)),
            ));
        }
    }
    let get = |name: &str| entries.iter().find(|(k, _)| k == name).map(|(_, v)| v);

    let user_id = match get("user_id") {
        None => {
            return Err(reject(
                "missing_user_id",
                "the object has no user_id (not a login event)",
            ))
        }
        Some(v) => required_string(v, "user_id", "invalid_user_id", Some(MAX_USER_ID))?,
    };
    let device_type = optional_string(get("device_type"), "device_type", "invalid_device_type")?;
    let locale = optional_string(get("locale"), "locale", "invalid_locale")?;
    let ip = match get("ip") {
        None => return Err(reject("missing_ip", "the object has no ip")),
        Some(Value::String(s)) => s
            .parse::<IpAddr>()
            .map_err(|_| {
                reject(
                    "invalid_ip",
                    format!("\"{}\" is not an IPv4 or IPv6 address", truncate(s, 60)),
                )
            })?
            .to_string(),
        Some(v) => {
            return Err(reject(
                "invalid_ip",
                format!("ip must be a string, not {}", kind(v)),
            ))
        }
    };
    let device_id = match get("device_id") {
        None => return Err(reject("missing_device_id", "the object has no device_id")),
        Some(v) => required_string(v, "device_id", "invalid_device_id", None)?,
    };
    let app_version = match get("app_version") {
        None => {
            return Err(reject(
                "missing_app_version",
                "the object has no app_version",
            ))
        }
        Some(Value::String(s)) => app_version_to_int(s)?,
        Some(v) => {
            return Err(reject(
                "invalid_app_version",
                format!(
                    "app_version must be a string such as \"2.3.0\", not {}",
                    kind(v)
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

fn truncate(s: &str, max: usize) -> String {
    let mut t: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        t.push('…');
    }
    t.replace('\0', "\\0")
}

fn required_string(
    v: &Value,
    field: &str,
    reason: &'static str,
    max: Option<usize>,
) -> Result<String, Rejection> {
    let s = match v {
        Value::String(s) => s,
        other => {
            return Err(reject(
                reason,
                format!("{field} must be a string, not {}", kind(other)),
            ))
        }
    };
    check_text(s, field, reason, max)?;
    if s.is_empty() {
        return Err(reject(reason, format!("{field} is empty")));
    }
    Ok(s.clone())
}

fn optional_string(
    v: Option<&Value>,
    field: &str,
    reason: &'static str,
) -> Result<Option<String>, Rejection> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_text(s, field, reason, Some(MAX_SHORT))?;
            Ok(Some(s.clone()))
        }
        Some(other) => Err(reject(
            reason,
            format!("{field} must be a string or null, not {}", kind(other)),
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
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#;

    #[test]
    fn sample_message() {
        let e = parse(SAMPLE).unwrap();
        assert_eq!(e.user_id, "424cdd21-063a-43a7-b91b-7ca1a833afae");
        assert_eq!(e.app_version, 2_003_000);
        assert_eq!(e.device_type.as_deref(), Some("android"));
        assert_eq!(e.locale.as_deref(), Some("RU"));
        assert_eq!(e.ip, "199.172.111.135");
        assert_eq!(e.device_id, "593-47-5928");
    }

    #[test]
    fn the_malformed_sample() {
        let r = parse(r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#).unwrap_err();
        assert_eq!(r.reason, "missing_user_id");
    }

    #[test]
    fn null_and_absent_optionals() {
        let e = parse(
            r#"{"user_id":"u","ip":"1.2.3.4","device_id":"d","app_version":"1","locale":null}"#,
        )
        .unwrap();
        assert_eq!((e.locale, e.device_type), (None, None));
    }

    #[test]
    fn all_sample_data_parses_as_documented() {
        let data = include_str!("../data/sample_login_messages.jsonl");
        let mut ok = 0;
        let mut rejected = Vec::new();
        let mut null_locales = 0;
        let mut versions = std::collections::HashMap::new();
        for line in data.lines() {
            match parse(line) {
                Ok(e) => {
                    ok += 1;
                    null_locales += e.locale.is_none() as usize;
                    let raw: Value = serde_json::from_str(line).unwrap();
                    let text = raw["app_version"].as_str().unwrap().to_string();
                    if let Some(prev) = versions.insert(e.app_version, text.clone()) {
                        // Only spellings of the same version may share an integer ("2.0" and "2.00").
                        assert_eq!(
                            app_version_to_int(&prev).unwrap(),
                            app_version_to_int(&text).unwrap()
                        );
                    }
                }
                Err(r) => rejected.push(r.reason),
            }
        }
        assert_eq!(ok, 99);
        assert_eq!(rejected, vec!["missing_user_id"]);
        assert_eq!(null_locales, 29);
    }

    #[test]
    fn app_version_packing() {
        for (s, v) in [
            ("2.3.0", 2_003_000),
            ("0.96", 96_000),
            ("2.00", 2_000_000),
            ("2.6", 2_006_000),
            ("0.2.6", 2_006),
            ("0.26", 26_000),
            ("7", 7_000_000),
            ("2146.999.999", 2_146_999_999),
            ("0.0.0", 0),
            ("002.03.4", 2_003_004),
        ] {
            assert_eq!(app_version_to_int(s).unwrap(), v, "{s}");
        }
        // The three that stripping dots collapses into 26 stay distinct.
        let a = ["2.6", "0.2.6", "0.26"].map(|s| app_version_to_int(s).unwrap());
        assert!(a[0] != a[1] && a[1] != a[2] && a[0] != a[2]);
        for s in [
            "", "1.2.3.4", "-1.0", "1.-0", "+1", "1..2", ".1", "1.", " 1.2", "1.2 ", "v1.2",
            "1.2a", "١.٢",
        ] {
            assert_eq!(
                app_version_to_int(s).unwrap_err().reason,
                "invalid_app_version",
                "{s:?}"
            );
        }
        for s in ["2147.0.0", "1.1000", "1.0.1000", "99999999999999999999.0"] {
            assert_eq!(
                app_version_to_int(s).unwrap_err().reason,
                "app_version_out_of_range",
                "{s:?}"
            );
        }
    }

    #[test]
    fn version_order_is_integer_order() {
        let ordered = [
            "0.0.1",
            "0.1",
            "0.1.1",
            "0.9.9",
            "0.10",
            "0.96",
            "1",
            "1.0.1",
            "2.3.0",
            "2.10",
            "10.0",
            "2146.999.999",
        ];
        let ints: Vec<i32> = ordered
            .iter()
            .map(|s| app_version_to_int(s).unwrap())
            .collect();
        assert!(ints.windows(2).all(|w| w[0] < w[1]), "{ints:?}");
        for i in ints {
            assert_eq!(
                app_version_to_int(&app_version_text(i).unwrap()).unwrap(),
                i
            );
        }
        assert_eq!(app_version_text(2_003_000).as_deref(), Some("2.3.0"));
        assert_eq!(app_version_text(-1), None);
        assert_eq!(app_version_text(2_147_000_000), None);
    }

    #[test]
    fn rejection_reasons() {
        let base = |k: &str, v: &str| {
            let mut m: serde_json::Map<String, Value> = serde_json::from_str(SAMPLE).unwrap();
            if v == "<absent>" {
                m.remove(k);
            } else {
                m.insert(k.into(), serde_json::from_str(v).unwrap());
            }
            serde_json::to_string(&m).unwrap()
        };
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "invalid_json"),
            ("".into(), "invalid_json"),
            ("{\"user_id\": \"a\"} trailing".into(), "invalid_json"),
            (r#"{"user_id":"\ud800"}"#.into(), "invalid_json"),
            ("[1,2]".into(), "not_an_object"),
            ("\"str\"".into(), "not_an_object"),
            ("42".into(), "not_an_object"),
            ("null".into(), "not_an_object"),
            (
                r#"{"user_id":"a","user_id":"b","ip":"1.1.1.1","device_id":"d","app_version":"1"}"#
                    .into(),
                "duplicate_key",
            ),
            (base("user_id", "<absent>"), "missing_user_id"),
            (base("user_id", "123"), "invalid_user_id"),
            (base("user_id", "\"\""), "invalid_user_id"),
            (
                base("user_id", &format!("\"{}\"", "u".repeat(129))),
                "invalid_user_id",
            ),
            (base("user_id", r#""a\u0000b""#), "invalid_user_id"),
            (base("user_id", r#"{"nested":"x"}"#), "invalid_user_id"),
            (
                base("device_type", &format!("\"{}\"", "d".repeat(33))),
                "invalid_device_type",
            ),
            (base("device_type", "[\"ios\"]"), "invalid_device_type"),
            (
                base("locale", &format!("\"{}\"", "l".repeat(33))),
                "invalid_locale",
            ),
            (base("locale", "7"), "invalid_locale"),
            (base("ip", "<absent>"), "missing_ip"),
            (base("ip", "\"999.1.1.1\""), "invalid_ip"),
            (base("ip", "\"1.2.3\""), "invalid_ip"),
            (base("ip", "\"fe80::1%eth0\""), "invalid_ip"),
            (base("ip", "\"01.2.3.4\""), "invalid_ip"),
            (base("ip", "null"), "invalid_ip"),
            (base("ip", "3232235777"), "invalid_ip"),
            (base("device_id", "<absent>"), "missing_device_id"),
            (base("device_id", "\"\""), "invalid_device_id"),
            (base("device_id", "5934759"), "invalid_device_id"),
            (base("app_version", "<absent>"), "missing_app_version"),
            (base("app_version", "2.3"), "invalid_app_version"),
            (base("app_version", "\"1.2.3.4\""), "invalid_app_version"),
            (
                base("app_version", "\"2147.0.0\""),
                "app_version_out_of_range",
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(parse(&body).unwrap_err().reason, reason, "{body}");
        }
        // Exactly-at-limit values are fine; multi-byte characters count as one.
        let ok = base("user_id", &format!("\"{}\"", "é".repeat(128)));
        assert!(parse(&ok).is_ok());
        let ok = base("locale", &format!("\"{}\"", "ü".repeat(32)));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn ipv6_is_canonicalised() {
        let b = SAMPLE.replace("199.172.111.135", "2001:DB8:0:0:0:0:0:1");
        assert_eq!(parse(&b).unwrap().ip, "2001:db8::1");
        let b = SAMPLE.replace("199.172.111.135", "::FFFF:10.0.0.1");
        assert_eq!(parse(&b).unwrap().ip, "::ffff:10.0.0.1");
    }

    proptest::proptest! {
        /// Any text: a login event within the documented limits, or a rejection; never a panic.
        #[test]
        fn parse_never_panics(body in "\\PC*") {
            if let Ok(e) = parse(&body) {
                proptest::prop_assert!(!e.user_id.is_empty() && e.user_id.chars().count() <= MAX_USER_ID);
                proptest::prop_assert!(!e.user_id.contains('\0') && !e.device_id.contains('\0'));
                proptest::prop_assert!(e.ip.parse::<IpAddr>().is_ok());
                proptest::prop_assert!(app_version_text(e.app_version).is_some());
            }
        }

        /// JSON-shaped bodies with arbitrary values for the known keys.
        #[test]
        fn parse_of_json_objects(
            uid in proptest::option::of("\\PC{0,140}"),
            ip in "[0-9a-fA-F:.%]{0,45}",
            ver in "[0-9.+-]{0,14}",
            loc in proptest::option::of("\\PC{0,40}"),
        ) {
            let mut m = serde_json::Map::new();
            if let Some(u) = &uid { m.insert("user_id".into(), Value::String(u.clone())); }
            m.insert("ip".into(), Value::String(ip.clone()));
            m.insert("device_id".into(), Value::String("d".into()));
            m.insert("app_version".into(), Value::String(ver.clone()));
            m.insert("locale".into(), loc.clone().map(Value::String).unwrap_or(Value::Null));
            let body = Value::Object(m).to_string();
            match parse(&body) {
                Ok(e) => {
                    proptest::prop_assert_eq!(Some(e.user_id), uid);
                    proptest::prop_assert_eq!(app_version_to_int(&ver).ok(), Some(e.app_version));
                }
                Err(r) => proptest::prop_assert!(REASONS.iter().any(|(x, _)| *x == r.reason)),
            }
        }

        /// Every version in range packs, orders and unpacks exactly.
        #[test]
        fn app_version_round_trip(a in 0u32..=MAX_MAJOR, b in 0u32..=999, c in 0u32..=999, d in 0u32..=MAX_MAJOR) {
            let v = app_version_to_int(&format!("{a}.{b}.{c}")).unwrap();
            proptest::prop_assert_eq!(app_version_text(v), Some(format!("{a}.{b}.{c}")));
            let w = app_version_to_int(&format!("{d}.{c}")).unwrap();
            proptest::prop_assert_eq!((a, b, c).cmp(&(d, c, 0)), v.cmp(&w));
        }
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_crash() {
        let deep = format!(
            "{{\"user_id\":{}1{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(parse(&deep).unwrap_err().reason, "invalid_json");
    }
}

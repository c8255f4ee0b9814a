use super::*;
use serde_json::Value;

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
    let e =
        parse(r#"{"user_id":"u","ip":"1.2.3.4","device_id":"d","app_version":"1","locale":null}"#)
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
        "", "1.2.3.4", "-1.0", "1.-0", "+1", "1..2", ".1", "1.", " 1.2", "1.2 ", "v1.2", "1.2a",
        "١.٢",
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
    // One address, one token: an IPv4-mapped IPv6 address is its IPv4 address.
    for spelling in [
        "::FFFF:203.0.113.7",
        "::ffff:cb00:7107",
        "0:0:0:0:0:ffff:203.0.113.7",
        "203.0.113.7",
    ] {
        let b = SAMPLE.replace("199.172.111.135", spelling);
        assert_eq!(parse(&b).unwrap().ip, "203.0.113.7", "{spelling}");
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 addresses are other addresses.
    let b = SAMPLE.replace("199.172.111.135", "::203.0.113.7");
    assert_eq!(parse(&b).unwrap().ip, "::cb00:7107");
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
fn deep_nesting_is_valid_json_not_a_crash() {
    // 10,000 levels where user_id should be: valid JSON, but not a string.
    let deep = format!(
        "{{\"user_id\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(parse(&deep).unwrap_err().reason, "invalid_user_id");
    // ... and in a key the loader ignores: the event loads.
    let ignored = SAMPLE.replacen(
        '{',
        &format!(
            "{{\"extra\": {}{{}}{}, ",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        1,
    );
    assert!(parse(&ignored).is_ok());
    // Unbalanced nesting is still not JSON.
    let broken = SAMPLE.replacen('{', &format!("{{\"extra\": {}, ", "[".repeat(300)), 1);
    assert_eq!(parse(&broken).unwrap_err().reason, "invalid_json");
}

#[test]
fn valid_json_the_loader_ignores_never_makes_a_body_invalid() {
    // Numbers beyond f64 and beyond i64, exponents, in ignored keys.
    for n in [
        "1e400",
        "-1e400",
        "123456789012345678901234567890",
        "1.5e-400",
    ] {
        let b = SAMPLE.replacen('{', &format!("{{\"big\": {n}, "), 1);
        assert!(parse(&b).is_ok(), "{n}");
    }
    // A leading byte order mark.
    assert!(parse(&format!("\u{feff}{SAMPLE}")).is_ok());
    // The same number where a known key is: the key's own reason.
    let b = SAMPLE.replace("\"2.3.0\"", "1e400");
    assert_eq!(parse(&b).unwrap_err().reason, "invalid_app_version");
    // At the top level: valid JSON, not an object.
    assert_eq!(parse("1e400").unwrap_err().reason, "not_an_object");
    assert_eq!(parse(" [[[[]]]] ").unwrap_err().reason, "not_an_object");
    assert_eq!(parse("\"text\"").unwrap_err().reason, "not_an_object");
    assert_eq!(parse("1e400x").unwrap_err().reason, "invalid_json");
    assert_eq!(parse("").unwrap_err().reason, "invalid_json");
}

/// An SNS notification as a topic without raw message delivery puts it on the queue (the shape
/// LocalStack and SNS write).
fn sns(message: &str) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "f7d929d7-e6e1-4f16-b26f-2d8df1715286",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:logins",
        "Message": message,
        "Timestamp": "2026-12-01T21:59:41.854Z",
        "SignatureVersion": "1",
        "Signature": "tweMcJ3KR6gt",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"
    })
    .to_string()
}

fn eventbridge(detail: &str) -> String {
    format!(
        r#"{{"version":"0","id":"6a7e8feb-b491-4cf7-a9f1-bf3703467718","detail-type":"UserLogin","source":"com.example.auth","account":"123456789012","time":"2026-11-30T23:59:59Z","region":"eu-west-1","resources":[],"detail":{detail}}}"#
    )
}

#[test]
fn sns_and_eventbridge_envelopes_are_unwrapped() {
    let bare = parse_message(SAMPLE).unwrap();
    assert_eq!(bare.envelope, None);

    let p = parse_message(&sns(SAMPLE)).unwrap();
    assert_eq!(p.event, bare.event);
    let e = p.envelope.unwrap();
    assert_eq!(e.kind, "sns");
    assert_eq!(e.time_ms, Some(1_796_162_381_854));

    let p = parse_message(&eventbridge(SAMPLE)).unwrap();
    assert_eq!(p.event, bare.event);
    let e = p.envelope.unwrap();
    assert_eq!(e.kind, "eventbridge");
    assert_eq!(e.time_ms, Some(1_796_083_199_000));
}

#[test]
fn a_bad_event_in_an_envelope_is_rejected_with_its_own_reason() {
    let r = parse_message(&sns(
        r#"{"user_id":"u","ip":"300.1.1.1","device_id":"d","app_version":"1"}"#,
    ))
    .unwrap_err();
    assert_eq!(r.reason, "invalid_ip");
    assert!(
        r.detail.starts_with("in the SNS notification's Message: "),
        "{}",
        r.detail
    );
    let r = parse_message(&sns("not json")).unwrap_err();
    assert_eq!(r.reason, "invalid_json");
    let r = parse_message(&sns(r#"{"foo":"bar"}"#)).unwrap_err();
    assert_eq!(r.reason, "missing_user_id");
    let r = parse_message(&eventbridge(
        r#"{"user_id":"u","ip":"1.1.1.1","device_id":"d","app_version":"x"}"#,
    ))
    .unwrap_err();
    assert_eq!(r.reason, "invalid_app_version");
    assert!(
        r.detail.starts_with("in the EventBridge event's detail: "),
        "{}",
        r.detail
    );
}

#[test]
fn what_is_not_an_envelope_is_parsed_as_the_event() {
    // A login event that happens to have envelope-like keys is the event.
    let with_type = SAMPLE.replacen(
        '{',
        r#"{"Type":"Notification","TopicArn":"x","Message":"{}","#,
        1,
    );
    assert_eq!(parse_message(&with_type).unwrap().envelope, None);
    // Incomplete envelopes are not unwrapped: missing_user_id, as before.
    for body in [
        r#"{"Type":"Notification","Message":"{}"}"#,
        r#"{"Type":"Notification","TopicArn":"t","Message":{"user_id":"u"}}"#,
        r#"{"Type":"SubscriptionConfirmation","TopicArn":"t","Message":"{}"}"#,
        r#"{"detail-type":"x","detail":{"user_id":"u"}}"#,
        r#"{"detail-type":"x","source":"s","detail":"{}"}"#,
    ] {
        assert_eq!(
            parse_message(body).unwrap_err().reason,
            "missing_user_id",
            "{body}"
        );
    }
    // An envelope with a key twice is ambiguous: duplicate_key, not unwrapped.
    let dup = r#"{"Type":"Notification","TopicArn":"t","Message":"{}","Message":"{}"}"#;
    assert_eq!(parse_message(dup).unwrap_err().reason, "duplicate_key");
    // An envelope with an unreadable time is still unwrapped, without a time.
    let p = parse_message(&sns(SAMPLE).replace("2026-12-01T21:59:41.854Z", "yesterday")).unwrap();
    assert_eq!(p.envelope.unwrap().time_ms, None);
}

proptest::proptest! {
    /// Any body in an SNS envelope gives exactly what it gives bare (the reason; the event).
    #[test]
    fn an_sns_envelope_changes_nothing_but_the_detail(body in "\\PC*") {
        let bare = parse(&body);
        let wrapped = parse_message(&sns(&body));
        match (bare, wrapped) {
            (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b.event),
            (Err(a), Err(b)) => proptest::prop_assert_eq!(a.reason, b.reason),
            (a, b) => proptest::prop_assert!(false, "bare {:?} vs wrapped {:?}", a, b),
        }
    }
}

use super::*;

const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7+/=\n-----END PRIVATE KEY-----";

fn masked_str(s: &str, secrets: &[&str]) -> String {
    let secrets: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    let rules = Rules {
        secrets: &secrets,
        token_key_literals: false,
    };
    masked(s, &rules).unwrap_or_else(|| s.to_string())
}

#[test]
fn a_key_literal_in_a_statement_is_masked_keeping_its_length() {
    let stmt = format!("SELECT unmask_pii(t, '{KEY}') FROM user_logins");
    let out = masked_str(&stmt, &[]);
    assert_eq!(out.len(), stmt.len());
    assert!(!out.contains("MIIE") && !out.contains("BKcw"), "{out}");
    assert!(
        out.contains("-----BEGIN PRIVATE KEY-----") && out.contains("-----END PRIVATE KEY-----")
    );
    assert!(out.starts_with("SELECT unmask_pii(t, '") && out.ends_with("') FROM user_logins"));
}

#[test]
fn every_private_key_header_and_escaped_newlines() {
    for header in [
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "EC PRIVATE KEY",
    ] {
        // An E'' string with \n escapes, as some clients send it.
        let stmt = format!("SELECT f(E'-----BEGIN {header}-----\\nAAAAB3NzaC1yc2EAAAADAQAB\\n-----END {header}-----')");
        let out = masked_str(&stmt, &[]);
        assert!(!out.contains("AAAAB3Nza"), "{header}: {out}");
    }
    // Two keys in one text; a public key is left alone.
    let pubkey = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQ\n-----END PUBLIC KEY-----";
    let out = masked_str(&format!("{KEY} {pubkey} {KEY}"), &[]);
    assert!(
        !out.contains("MIIE") && out.contains("MFkwEwYHKoZIzj0CAQ"),
        "{out}"
    );
}

#[test]
fn a_cut_off_key_is_masked_to_the_end() {
    // pg_stat_activity keeps the first 1,024 bytes; a log line may be truncated.
    let stmt = format!("SELECT unmask_pii(t, '{}", &KEY[..60]);
    let out = masked_str(&stmt, &[]);
    assert!(!out.contains("MIIE") && !out.contains("BKc"), "{out}");
}

#[test]
fn literal_secrets_are_masked_but_not_short_ones() {
    let out = masked_str(
        "SELECT unmask_pii(t, k, 'correct horse battery')",
        &["correct horse battery"],
    );
    assert_eq!(out, "SELECT unmask_pii(t, k, '*********************')");
    let short = Rules {
        secrets: &[b"a"],
        token_key_literals: false,
    };
    assert_eq!(
        masked(&"a".repeat(10), &short),
        None,
        "too short to look for"
    );
    assert_eq!(masked("nothing to see", &Rules::default()), None);
}

#[test]
fn token_keys_in_text_that_calls_set_token_key() {
    let hex = "e5a1290af714743d905bd1e5720a553f3cfb06f7c2241beb8aa7a5e21c921297";
    let stmt = format!("SELECT set_token_key(decode('{hex}', 'hex'))");
    assert!(mentions_token_key(stmt.as_bytes()));
    let rules = Rules {
        secrets: &[],
        token_key_literals: true,
    };
    let out = masked(&stmt, &rules).unwrap();
    assert!(
        !out.contains(&hex[..16]) && out.len() == stmt.len(),
        "{out}"
    );
    for form in [
        format!("'\\x{hex}'"),
        "'5aEpCvcUdD2QW9HlcgpVPzz7BvfCJB6+iqel4hySEpc='".to_string(),
    ] {
        let out = masked(&format!("$1 = {form}"), &rules).unwrap();
        assert!(out.matches('*').count() >= 43, "{out}");
    }
    // Short hex and ordinary words stay.
    assert_eq!(masked("SELECT set_token_key(x) -- deadbeef", &rules), None);
}

#[test]
fn begin_without_private_key_is_not_a_key() {
    assert!(!has_private_key(
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    ));
    assert!(has_private_key(KEY.as_bytes()));
}

proptest::proptest! {
    #[test]
    fn masking_never_panics_and_keeps_the_length(text in "\\PC{0,200}", secret in "\\PC{0,8}", keys: bool) {
        let mut bytes = text.as_bytes().to_vec();
        let secrets = [secret.as_bytes()];
        let rules = Rules { secrets: &secrets, token_key_literals: keys };
        let would = holds_secret(&bytes, &rules);
        proptest::prop_assert_eq!(mask_in_place(&mut bytes, &rules), would);
        proptest::prop_assert_eq!(bytes.len(), text.len());
        proptest::prop_assert!(std::str::from_utf8(&bytes).is_ok());
    }

    #[test]
    fn a_key_anywhere_is_masked(prefix in "[^-]{0,40}", body in "[A-Za-z0-9+/=]{8,80}", suffix in "[^-]{0,40}") {
        let text = format!("{prefix}-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----{suffix}");
        let out = masked_str(&text, &[]);
        proptest::prop_assert!(!out.contains(&body));
    }
}

#[test]
fn a_proxy_urls_user_information_is_masked_where_the_setting_is_named() {
    for (stmt, kept) in [
        (
            "SET sqs_loader.proxy = 'http://ops:s3cret@10.0.0.5:3128'",
            "SET sqs_loader.proxy = 'http://",
        ),
        (
            "ALTER ROLE r SET \"SQS_LOADER.PROXY\" TO 'http://t0ken@proxy:3128/'",
            "@proxy:3128/'",
        ),
        (
            "ALTER SYSTEM SET sqs_loader.proxy=\"http://a:b@c@proxy\"",
            "@proxy\"",
        ),
    ] {
        let out = masked_str(stmt, &[]);
        assert_eq!(out.len(), stmt.len());
        assert!(
            !out.contains("s3cret") && !out.contains("t0ken") && !out.contains("a:b@c"),
            "{out}"
        );
        assert!(out.contains(kept) && out.contains("***"), "{out}");
    }
    // Text that does not name the setting keeps its URLs; a URL without user information
    // keeps everything.
    for stmt in [
        "SELECT sqs_pull('http://user@example.com/q', 1)",
        "SET sqs_loader.proxy = 'http://10.0.0.5:3128'",
    ] {
        assert_eq!(masked_str(stmt, &[]), stmt);
    }
}

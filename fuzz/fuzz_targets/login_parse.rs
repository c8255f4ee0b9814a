//! The message parser on arbitrary bodies (bare or in an SNS/EventBridge envelope): a login event
//! within the documented limits, or a rejection with a documented reason; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sqs_loader::login;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    match login::parse_message(body) {
        Ok(login::Parsed { event: e, .. }) => {
            assert!(!e.user_id.is_empty() && e.user_id.chars().count() <= login::MAX_USER_ID);
            assert!(e.device_type.as_ref().is_none_or(|d| d.chars().count() <= login::MAX_SHORT));
            assert!(e.locale.as_ref().is_none_or(|l| l.chars().count() <= login::MAX_SHORT));
            assert!(!e.device_id.is_empty() && !e.device_id.contains('\0') && !e.user_id.contains('\0'));
            assert!(e.ip.parse::<std::net::IpAddr>().is_ok());
            let text = login::app_version_text(e.app_version).expect("in range");
            assert_eq!(login::app_version_to_int(&text).unwrap(), e.app_version);
        }
        Err(r) => assert!(login::REASONS.iter().any(|(x, _)| *x == r.reason)),
    }
});

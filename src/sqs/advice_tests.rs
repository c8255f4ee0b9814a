use super::*;
use crate::sqs::endpoint::for_queue_url;
use crate::sqs::{wire, Protocol, Request, SqsError};

/// Decode an error document the way a call does, and give the advice the call would attach.
fn advise(
    protocol: Protocol,
    queue_url: &str,
    endpoint_override: Option<&str>,
    region: &str,
    query_error_header: Option<&str>,
    body: &str,
    action_send: bool,
) -> (String, Option<String>) {
    let req = if action_send {
        Request::SendBatch {
            queue_url: queue_url.into(),
            entries: vec![("0".into(), "{}".into())],
            fifo: None,
        }
    } else {
        Request::Receive {
            queue_url: queue_url.into(),
            max_messages: 10,
            visibility_timeout: None,
            wait_seconds: 0,
            attempt_id: None,
        }
    };
    let ep = for_queue_url(queue_url, endpoint_override, region).unwrap();
    let header = |h: &str| {
        (h == "x-amzn-query-error")
            .then(|| query_error_header.map(str::to_string))
            .flatten()
    };
    let err = wire::decode(
        protocol,
        &req,
        400,
        &header,
        body.as_bytes(),
        &ep.base,
        false,
    )
    .unwrap_err();
    let SqsError::Aws { code, message, .. } = err else {
        panic!("not an AWS error: {err:?}")
    };
    let advice = for_error(req.action(), &code, &message, &ep, req.queue_url());
    (code, advice)
}

const Q: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/login-queue";

#[test]
fn kms_access_denied_in_both_protocols_names_the_permission() {
    let xml = r#"<?xml version="1.0"?><ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><Error><Type>Sender</Type><Code>KMS.AccessDeniedException</Code><Message>User: arn:aws:sts::123456789012:assumed-role/loader/i-0abc is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab because no identity-based policy allows the kms:Decrypt action (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException; Request ID: 5fd2b3c4-0000-4000-8000-000000000000; Proxy: null)</Message><Detail/></Error><RequestId>7a62c49f-347e-4fc4-9331-6e8e7a96aa73</RequestId></ErrorResponse>"#;
    let (code, advice) = advise(Protocol::Query, Q, None, "us-east-1", None, xml, false);
    assert_eq!(code, "KmsAccessDenied");
    let advice = advice.unwrap();
    assert!(
        advice.contains("kms:Decrypt") && advice.contains("key policy"),
        "{advice}"
    );
    assert!(!advice.contains("GenerateDataKey"), "{advice}");

    let json = r#"{"__type":"com.amazonaws.sqs#KmsAccessDenied","message":"User: arn:aws:sts::123456789012:assumed-role/loader/i-0abc is not authorized to perform: kms:GenerateDataKey on resource: arn:aws:kms:eu-west-1:123456789012:key/1234abcd with an explicit deny"}"#;
    let (code, advice) = advise(
        Protocol::Json,
        Q,
        None,
        "us-east-1",
        Some("KMS.AccessDeniedException;Sender"),
        json,
        true,
    );
    assert_eq!(code, "KmsAccessDenied");
    assert!(advice
        .unwrap()
        .contains("kms:GenerateDataKey and kms:Decrypt"));
}

#[test]
fn other_kms_states_say_what_to_change() {
    for (query_code, json_type, needle) in [
        ("KMS.DisabledException", "KmsDisabled", "disabled"),
        ("KMS.NotFoundException", "KmsNotFound", "does not exist"),
        (
            "KMS.KMSInvalidStateException",
            "KmsInvalidState",
            "pending deletion",
        ),
        (
            "KMS.InvalidKeyUsageException",
            "KmsInvalidKeyUsage",
            "symmetric",
        ),
    ] {
        let xml = format!("<ErrorResponse><Error><Type>Sender</Type><Code>{query_code}</Code><Message>x</Message></Error><RequestId>r</RequestId></ErrorResponse>");
        let (code, advice) = advise(Protocol::Query, Q, None, "us-east-1", None, &xml, false);
        assert_eq!(code, json_type);
        assert!(advice.unwrap().contains(needle), "{query_code}");
        let json = format!(r#"{{"__type":"com.amazonaws.sqs#{json_type}","message":"x"}}"#);
        let (code, advice) = advise(Protocol::Json, Q, None, "us-east-1", None, &json, false);
        assert_eq!(code, json_type);
        assert!(advice.unwrap().contains(needle), "{json_type}");
    }
    // Throttled by KMS: retried like any throttling.
    let e = SqsError::Aws {
        action: "ReceiveMessage",
        status: 400,
        code: crate::sqs::normalize_code("KMS.ThrottlingException"),
        message: "x".into(),
        attempts: 1,
        advice: None,
    };
    assert!(e.retryable());
}

#[test]
fn a_vpc_endpoint_signed_for_the_wrong_region() {
    // A VPC endpoint reached through a private host name that names no region: signed for
    // sqs_loader.region (us-east-1 here), while the queue is in eu-west-1.
    let xml = r#"<ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>Credential should be scoped to a valid region. </Message><Detail/></Error><RequestId>b1f0</RequestId></ErrorResponse>"#;
    let (code, advice) = advise(
        Protocol::Query,
        Q,
        Some("https://vpce-0a1b2c3d4e5f-abcdefgh.sqs.internal.example"),
        "us-east-1",
        None,
        xml,
        false,
    );
    assert_eq!(code, "SignatureDoesNotMatch");
    let advice = advice.unwrap();
    assert!(
        advice.contains("VPC endpoint host vpce-0a1b2c3d4e5f-abcdefgh.sqs.internal.example"),
        "{advice}"
    );
    assert!(
        advice.contains("signed for region us-east-1")
            && advice.contains("SET sqs_loader.region = 'eu-west-1'"),
        "{advice}"
    );
    // The JSON protocol's document for the same mistake, with a queue URL naming no region.
    let json = r#"{"__type":"com.amazon.coral.service#InvalidSignatureException","message":"Credential should be scoped to a valid region."}"#;
    let (_, advice) = advise(
        Protocol::Json,
        "https://vpce-0a1b.sqs.internal.example/123456789012/q",
        None,
        "eu-west-9",
        None,
        json,
        false,
    );
    assert!(advice
        .unwrap()
        .contains("set sqs_loader.region to the queue's region"));
}

#[test]
fn a_queue_of_another_region_than_the_endpoint() {
    let json = r#"{"__type":"com.amazonaws.sqs#InvalidAddress","message":"The address https://sqs.us-east-1.amazonaws.com/ is not valid for this endpoint."}"#;
    let (code, advice) = advise(
        Protocol::Json,
        Q,
        Some("https://sqs.us-east-1.amazonaws.com"),
        "us-east-1",
        Some("InvalidAddress;Sender"),
        json,
        false,
    );
    assert_eq!(code, "InvalidAddress");
    let advice = advice.unwrap();
    assert!(
        advice.contains("The queue URL is in eu-west-1")
            && advice.contains("unset sqs_loader.endpoint"),
        "{advice}"
    );
}

#[test]
fn a_legacy_queue_url_gets_its_current_form() {
    let xml = r#"<ErrorResponse><Error><Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code><Message>The specified queue does not exist for this wsdl version.</Message><Detail/></Error><RequestId>r</RequestId></ErrorResponse>"#;
    let (code, advice) = advise(
        Protocol::Query,
        "https://eu-west-1.queue.amazonaws.com/123456789012/login-queue",
        None,
        "us-east-1",
        None,
        xml,
        false,
    );
    assert_eq!(code, "QueueDoesNotExist");
    assert_eq!(
        advice.unwrap(),
        "eu-west-1.queue.amazonaws.com is a legacy SQS host name: use the queue's current URL, https://sqs.eu-west-1.amazonaws.com/123456789012/login-queue (the same queue)."
    );
    let (_, advice) = advise(
        Protocol::Query,
        "https://queue.amazonaws.com/123456789012/login-queue",
        None,
        "eu-west-1",
        None,
        xml,
        false,
    );
    assert!(advice
        .unwrap()
        .contains("https://sqs.us-east-1.amazonaws.com/123456789012/login-queue"));
    // An ordinary missing queue keeps the ordinary advice.
    let (_, advice) = advise(Protocol::Query, Q, None, "us-east-1", None, xml, false);
    assert!(advice
        .unwrap()
        .starts_with("Create it with sqs_create_queue"));
}

#[test]
fn errors_that_say_it_all_get_no_advice() {
    let json = r#"{"__type":"com.amazonaws.sqs#OverLimit","message":"Too many in flight"}"#;
    assert_eq!(
        advise(Protocol::Json, Q, None, "us-east-1", None, json, false).1,
        None
    );
    let json = r#"{"__type":"com.amazon.coral.service#InvalidClientTokenId","message":"The security token included in the request is invalid."}"#;
    assert_eq!(
        advise(Protocol::Json, Q, None, "us-east-1", None, json, false).1,
        None
    );
}

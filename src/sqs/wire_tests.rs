use super::*;

/// Most tests decode as a superuser would: foreign bodies may be quoted.
fn decode(
    protocol: Protocol,
    req: &Request,
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    endpoint: &str,
) -> Result<Response, SqsError> {
    super::decode(protocol, req, status, header, body, endpoint, true)
}

#[test]
fn a_foreign_reply_is_quoted_only_for_superusers() {
    let page = b"<html><h1>Internal admin</h1><p>token=hunter2</p></html>";
    let hidden = super::decode(
        Protocol::Json,
        &receive(),
        500,
        &no_headers,
        page,
        "e",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        !hidden.contains("admin") && !hidden.contains("hunter2"),
        "{hidden}"
    );
    assert!(
        hidden.contains("HTTP status 500") && hidden.contains("superusers"),
        "{hidden}"
    );
    let shown = decode(Protocol::Json, &receive(), 500, &no_headers, page, "e")
        .unwrap_err()
        .to_string();
    assert!(shown.contains("Internal admin"), "{shown}");
    // A real SQS error document is quoted for everyone: its code and message.
    let doc = br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#;
    let e = super::decode(
        Protocol::Json,
        &receive(),
        400,
        &no_headers,
        doc,
        "e",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("QueueDoesNotExist: The specified queue does not exist."),
        "{e}"
    );
}

fn no_headers(_: &str) -> Option<String> {
    None
}

fn receive() -> Request {
    Request::Receive {
        queue_url: "http://localhost:4566/000000000000/q".into(),
        max_messages: 10,
        visibility_timeout: Some(30),
        wait_seconds: 0,
        attempt_id: None,
    }
}

#[test]
fn json_receive_request() {
    let r = encode(Protocol::Json, &receive());
    assert_eq!(r.path, "/");
    assert!(r
        .headers
        .contains(&("x-amz-target", "AmazonSQS.ReceiveMessage".into())));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["QueueUrl"], "http://localhost:4566/000000000000/q");
    assert_eq!(v["MaxNumberOfMessages"], 10);
    assert_eq!(v["VisibilityTimeout"], 30);
    assert_eq!(
        v["MessageSystemAttributeNames"],
        json!(["SentTimestamp", "ApproximateReceiveCount"])
    );
}

#[test]
fn query_requests_are_form_encoded() {
    let r = encode(Protocol::Query, &receive());
    let body = String::from_utf8(r.body).unwrap();
    assert!(body.starts_with("Action=ReceiveMessage&Version=2012-11-05&QueueUrl=http%3A%2F%2Flocalhost%3A4566%2F000000000000%2Fq"));
    assert!(body.contains("VisibilityTimeout=30"));
    assert!(body.contains(
        "AttributeName.1=SentTimestamp&MessageSystemAttributeName.1=SentTimestamp&\
         AttributeName.2=ApproximateReceiveCount&MessageSystemAttributeName.2=ApproximateReceiveCount"
    ));
    let r = encode(
        Protocol::Query,
        &Request::SendBatch {
            queue_url: "u".into(),
            entries: vec![("0".into(), "a&b=c \"é\"".into()), ("1".into(), "x".into())],
            fifo: None,
        },
    );
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&r.body).into_owned().collect();
    assert!(pairs.contains(&(
        "SendMessageBatchRequestEntry.1.MessageBody".into(),
        "a&b=c \"é\"".into()
    )));
    assert!(pairs.contains(&("SendMessageBatchRequestEntry.2.Id".into(), "1".into())));
}

#[test]
fn json_receive_response() {
    let body = r#"{"Messages":[{"MessageId":"m1","ReceiptHandle":"r1","MD5OfBody":"900150983cd24fb0d6963f7d28e17f72","Body":"abc","Attributes":{"SentTimestamp":"1700000000123","ApproximateReceiveCount":"2"}}]}"#;
    let r = decode(
        Protocol::Json,
        &receive(),
        200,
        &no_headers,
        body.as_bytes(),
        "e",
    )
    .unwrap();
    let Response::Received(m) = r else { panic!() };
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].body, "abc");
    assert_eq!(m[0].sent_timestamp_ms, Some(1_700_000_000_123));
    assert_eq!(m[0].receive_count, Some(2));
    let empty = decode(Protocol::Json, &receive(), 200, &no_headers, b"{}", "e").unwrap();
    assert_eq!(empty, Response::Received(vec![]));
}

#[test]
fn md5_mismatch_is_an_error() {
    let body = r#"{"Messages":[{"MessageId":"m1","ReceiptHandle":"r1","MD5OfBody":"00000000000000000000000000000000","Body":"abc"}]}"#;
    let err = decode(
        Protocol::Json,
        &receive(),
        200,
        &no_headers,
        body.as_bytes(),
        "e",
    )
    .unwrap_err();
    assert!(matches!(err, SqsError::Protocol { .. }), "{err:?}");
}

#[test]
fn xml_receive_response_unescapes_bodies() {
    let body = r#"<?xml version='1.0' encoding='utf-8'?>
<ReceiveMessageResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><ReceiveMessageResult><Message><MessageId>e5</MessageId><MD5OfBody>ff4346e5e8ab7dfd89199ac0941663a6</MD5OfBody><Body>{&quot;a&quot;:&quot;&lt;&amp;&gt;&quot;}</Body><Attribute><Name>SentTimestamp</Name><Value>1795653668533</Value></Attribute><Attribute><Name>ApproximateReceiveCount</Name><Value>1</Value></Attribute><ReceiptHandle>MjVj</ReceiptHandle></Message></ReceiveMessageResult><ResponseMetadata><RequestId>ad</RequestId></ResponseMetadata></ReceiveMessageResponse>"#;
    let r = decode(
        Protocol::Query,
        &receive(),
        200,
        &no_headers,
        body.as_bytes(),
        "e",
    )
    .unwrap();
    let Response::Received(m) = r else { panic!() };
    assert_eq!(m[0].body, r#"{"a":"<&>"}"#);
    assert_eq!(m[0].receipt_handle, "MjVj");
    assert_eq!(m[0].sent_timestamp_ms, Some(1_795_653_668_533));
    let empty = r#"<ReceiveMessageResponse><ReceiveMessageResult/><ResponseMetadata/></ReceiveMessageResponse>"#;
    assert_eq!(
        decode(
            Protocol::Query,
            &receive(),
            200,
            &no_headers,
            empty.as_bytes(),
            "e"
        )
        .unwrap(),
        Response::Received(vec![])
    );
}

#[test]
fn errors_in_both_protocols() {
    let json = br#"{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The specified queue does not exist."}"#;
    let e = decode(Protocol::Json, &receive(), 400, &no_headers, json, "e").unwrap_err();
    assert!(
        matches!(&e, SqsError::Aws { code, status: 400, .. } if code == "QueueDoesNotExist"),
        "{e:?}"
    );
    assert!(!e.retryable());
    let xml = br#"<ErrorResponse xmlns="x"><Error><Code>AWS.SimpleQueueService.NonExistentQueue</Code><Message>The specified queue does not exist for this wsdl version.</Message><Type>Sender</Type></Error><RequestId>8e</RequestId></ErrorResponse>"#;
    let e = decode(Protocol::Query, &receive(), 400, &no_headers, xml, "e").unwrap_err();
    assert!(
        matches!(&e, SqsError::Aws { code, .. } if code == "QueueDoesNotExist"),
        "{e:?}"
    );
    let throttled = br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    assert!(
        decode(Protocol::Json, &receive(), 400, &no_headers, throttled, "e")
            .unwrap_err()
            .retryable()
    );
    let e = decode(
        Protocol::Json,
        &receive(),
        503,
        &no_headers,
        b"<html>busy</html>",
        "e",
    )
    .unwrap_err();
    assert!(e.retryable());
    assert!(
        matches!(&e, SqsError::Aws { code, .. } if code == "HTTP503"),
        "{e:?}"
    );
}

#[test]
fn batch_results_both_protocols() {
    let req = Request::DeleteBatch {
        queue_url: "u".into(),
        entries: vec![],
    };
    let json = br#"{"Successful":[{"Id":"0"}],"Failed":[{"Id":"1","SenderFault":true,"Code":"ReceiptHandleIsInvalid","Message":"bad"}]}"#;
    let Response::Batch { successful, failed } =
        decode(Protocol::Json, &req, 200, &no_headers, json, "e").unwrap()
    else {
        panic!()
    };
    assert_eq!(successful, vec![("0".to_string(), None)]);
    assert_eq!(failed[0].code, "ReceiptHandleIsInvalid");
    assert!(failed[0].sender_fault);
    let xml = br#"<DeleteMessageBatchResponse><DeleteMessageBatchResult><DeleteMessageBatchResultEntry><Id>0</Id></DeleteMessageBatchResultEntry><BatchResultErrorEntry><Id>1</Id><SenderFault>true</SenderFault><Code>ReceiptHandleIsInvalid</Code><Message>bad</Message></BatchResultErrorEntry></DeleteMessageBatchResult></DeleteMessageBatchResponse>"#;
    let Response::Batch { successful, failed } =
        decode(Protocol::Query, &req, 200, &no_headers, xml, "e").unwrap()
    else {
        panic!()
    };
    assert_eq!(successful.len(), 1);
    assert_eq!(failed[0].id, "1");
}

#[test]
fn change_visibility_batch_both_protocols() {
    let req = Request::ChangeVisibilityBatch {
        queue_url: "u".into(),
        entries: vec![("0".into(), "rh0".into())],
        visibility_timeout: 0,
    };
    let v: Value = serde_json::from_slice(&encode(Protocol::Json, &req).body).unwrap();
    assert_eq!(v["Entries"][0]["VisibilityTimeout"], 0);
    let q = String::from_utf8(encode(Protocol::Query, &req).body).unwrap();
    assert!(
        q.contains("ChangeMessageVisibilityBatchRequestEntry.1.VisibilityTimeout=0"),
        "{q}"
    );
    let xml = br#"<ChangeMessageVisibilityBatchResponse><ChangeMessageVisibilityBatchResult><ChangeMessageVisibilityBatchResultEntry><Id>0</Id></ChangeMessageVisibilityBatchResultEntry></ChangeMessageVisibilityBatchResult></ChangeMessageVisibilityBatchResponse>"#;
    let Response::Batch { successful, .. } =
        decode(Protocol::Query, &req, 200, &no_headers, xml, "e").unwrap()
    else {
        panic!()
    };
    assert_eq!(successful.len(), 1);
}

#[test]
fn create_queue_and_attributes() {
    let req = Request::CreateQueue {
        name: "q".into(),
        attributes: BTreeMap::new(),
    };
    assert_eq!(
        decode(
            Protocol::Json,
            &req,
            200,
            &no_headers,
            br#"{"QueueUrl":"http://x/0/q"}"#,
            "e"
        )
        .unwrap(),
        Response::QueueUrl("http://x/0/q".into())
    );
    let xml = br#"<CreateQueueResponse><CreateQueueResult><QueueUrl>http://x/0/q</QueueUrl></CreateQueueResult></CreateQueueResponse>"#;
    assert_eq!(
        decode(Protocol::Query, &req, 200, &no_headers, xml, "e").unwrap(),
        Response::QueueUrl("http://x/0/q".into())
    );
    let req = Request::GetAttributes {
        queue_url: "u".into(),
    };
    let xml = br#"<GetQueueAttributesResponse><GetQueueAttributesResult><Attribute><Name>ApproximateNumberOfMessages</Name><Value>3</Value></Attribute></GetQueueAttributesResult></GetQueueAttributesResponse>"#;
    let Response::Attributes(a) =
        decode(Protocol::Query, &req, 200, &no_headers, xml, "e").unwrap()
    else {
        panic!()
    };
    assert_eq!(a["ApproximateNumberOfMessages"], "3");
}

proptest::proptest! {
    /// Whatever an endpoint answers, decoding returns a value or an error: never a panic.
    #[test]
    fn decode_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..600), status in 100u16..600, json in proptest::bool::ANY) {
        let protocol = if json { Protocol::Json } else { Protocol::Query };
        let reqs = [
            receive(),
            Request::DeleteBatch { queue_url: "u".into(), entries: vec![] },
            Request::SendBatch { queue_url: "u".into(), entries: vec![], fifo: None },
            Request::CreateQueue { name: "q".into(), attributes: BTreeMap::new() },
            Request::GetAttributes { queue_url: "u".into() },
        ];
        for req in &reqs {
            let _ = decode(protocol, req, status, &no_headers, &body, "e");
        }
    }

    /// XML-looking input, which reaches deeper into the XML decoder.
    #[test]
    fn decode_xml_like_never_panics(body in "(<[A-Za-z]{1,12}>|</[A-Za-z]{1,12}>|&[a-z#0-9]{1,6};|[^<&]{0,8}){0,40}") {
        for req in [receive(), Request::GetAttributes { queue_url: "u".into() }] {
            let _ = decode(Protocol::Query, &req, 200, &no_headers, body.as_bytes(), "e");
            let _ = decode(Protocol::Query, &req, 400, &no_headers, body.as_bytes(), "e");
        }
    }
}

#[test]
fn garbage_is_a_protocol_error_not_a_panic() {
    for body in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"Messages":"x"}"#,
        br#"{"Messages":[{"Body":"b"}]}"#,
    ] {
        let e = decode(Protocol::Json, &receive(), 200, &no_headers, body, "e");
        assert!(
            matches!(e, Err(SqsError::Protocol { .. })),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let e = decode(
        Protocol::Query,
        &receive(),
        200,
        &no_headers,
        b"<a><b></a>",
        "e",
    );
    assert!(matches!(e, Err(SqsError::Protocol { .. })));
}

#[test]
fn fifo_receive_attempt_and_send_group_in_both_protocols() {
    let recv = Request::Receive {
        queue_url: "http://localhost:4566/000000000000/q.fifo".into(),
        max_messages: 10,
        visibility_timeout: None,
        wait_seconds: 0,
        attempt_id: Some("a1b2".into()),
    };
    let j = encode(Protocol::Json, &recv);
    let v: Value = serde_json::from_slice(&j.body).unwrap();
    assert_eq!(v["ReceiveRequestAttemptId"], "a1b2");
    let q = String::from_utf8(encode(Protocol::Query, &recv).body).unwrap();
    assert!(q.contains("ReceiveRequestAttemptId=a1b2"), "{q}");
    // Without an attempt id (standard queues) the parameter is absent.
    let j = encode(Protocol::Json, &receive());
    assert!(serde_json::from_slice::<Value>(&j.body)
        .unwrap()
        .get("ReceiveRequestAttemptId")
        .is_none());

    let send = Request::SendBatch {
        queue_url: "http://localhost:4566/000000000000/q.fifo".into(),
        entries: vec![("0".into(), "a".into()), ("1".into(), "b".into())],
        fifo: Some(("g1".into(), "n9".into())),
    };
    let v: Value = serde_json::from_slice(&encode(Protocol::Json, &send).body).unwrap();
    assert_eq!(v["Entries"][1]["MessageGroupId"], "g1");
    assert_eq!(v["Entries"][0]["MessageDeduplicationId"], "n9-0");
    assert_eq!(v["Entries"][1]["MessageDeduplicationId"], "n9-1");
    let q = String::from_utf8(encode(Protocol::Query, &send).body).unwrap();
    assert!(
        q.contains("SendMessageBatchRequestEntry.2.MessageGroupId=g1"),
        "{q}"
    );
    assert!(
        q.contains("SendMessageBatchRequestEntry.2.MessageDeduplicationId=n9-1"),
        "{q}"
    );
}

/// A JSON value for the receive-decoder comparison: mostly what SQS sends, often not.
fn any_json() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        4 => "[0-9]{1,14}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        3 => "[a-zA-Z0-9+/=é\"\\\\\u{1F600}-]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => Just("null".to_string()),
        1 => Just("true".to_string()),
        1 => Just("-12.5e3".to_string()),
        1 => Just("123".to_string()),
        1 => Just("[1,{\"a\":[]}]".to_string()),
        1 => Just("{\"b\":null}".to_string()),
    ];
    leaf.boxed()
}

/// One of `keys` (JSON-quoted, escapes included), as the key of an object field.
fn one_of(keys: &'static [&'static str]) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::strategy::Strategy;
    proptest::sample::select(keys).prop_map(str::to_string)
}

/// A key of a message or of its attributes: the ones the decoders look for, spelled plainly or
/// with an escape, and others.
fn any_key() -> impl proptest::strategy::Strategy<Value = String> {
    one_of(&[
        "\"MessageId\"",
        "\"ReceiptHandle\"",
        "\"Body\"",
        "\"MD5OfBody\"",
        "\"SentTimestamp\"",
        "\"ApproximateReceiveCount\"",
        "\"B\\u006fdy\"",
        "\"Other\"",
        "\"Messages\"",
    ])
}

fn object(entries: Vec<(String, String)>) -> String {
    let fields: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A message: the three required fields as strings (usually), plus any others, in any order.
fn any_message() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let attrs = prop_oneof![
        4 => proptest::collection::vec((any_key(), any_json()), 0..4).prop_map(object),
        1 => any_json(),
    ];
    (
        proptest::collection::vec((any_key(), any_json()), 0..4),
        proptest::option::weighted(0.8, attrs),
        proptest::bool::weighted(0.8),
        any_json(),
    )
        .prop_map(|(mut extra, attrs, plain, other)| {
            let mut fields = vec![];
            if plain {
                for k in ["MessageId", "ReceiptHandle", "Body"] {
                    fields.push((format!("\"{k}\""), format!("\"{k}-value\"")));
                }
            }
            fields.append(&mut extra);
            if let Some(a) = attrs {
                fields.push(("\"Attributes\"".into(), a));
            }
            if !fields.is_empty() && fields.len() % 3 == 0 {
                fields.rotate_left(1);
            }
            if fields.len() == 7 {
                return other;
            }
            object(fields)
        })
}

proptest::proptest! {
    /// The DOM-free ReceiveMessage decoder takes a response only to give what the general
    /// decoder gives; and it takes the plain responses SQS sends.
    #[test]
    fn receive_decoders_agree(
        messages in proptest::collection::vec(any_message(), 0..4),
        shape in 0u8..6,
        other in any_json(),
    ) {
        let list = format!("[{}]", messages.join(","));
        let text = match shape {
            0 => format!("{{\"Messages\":{list}}}"),
            1 => format!("{{\"Other\":{other},\"Messages\":{list}}}"),
            2 => format!("{{\"Messages\":{other},\"Messages\":{list}}}"),
            3 => format!("{{\"Messages\":{list},\"Messages\":{other}}}"),
            4 => format!("{{\"Messag\\u0065s\":{list}}} "),
            _ => format!("[{list}]"),
        };
        let general = super::decode_json_value(Action::ReceiveMessage, &text);
        if let Some(fast) = super::receive_json::decode(&text) {
            proptest::prop_assert_eq!(Ok(Response::Received(fast)), general, "{}", text);
        } else if let Ok(Response::Received(m)) = &general {
            // Only a response with nothing to take may go the general way and succeed.
            proptest::prop_assert!(m.is_empty() || shape >= 2, "{}", text);
        }
    }
}

#[test]
fn receive_decoders_agree_on_the_plain_response() {
    let body = r#"{"Messages":[{"MessageId":"m1","ReceiptHandle":"r1","MD5OfBody":"900150983cd24fb0d6963f7d28e17f72","Body":"a\"b\u00e9","Attributes":{"SentTimestamp":"1700000000123","ApproximateReceiveCount":"2","Other":"x"}},{"Body":"x","ReceiptHandle":"r2","MessageId":"m2","Attributes":{"SentTimestamp":12}}]}"#;
    let fast = super::receive_json::decode(body).expect("the plain shape is taken");
    assert_eq!(fast.len(), 2);
    assert_eq!(fast[0].body, "a\"bé");
    assert_eq!(fast[0].sent_timestamp_ms, Some(1_700_000_000_123));
    assert_eq!(fast[1].sent_timestamp_ms, None);
    assert_eq!(
        Ok(Response::Received(fast)),
        super::decode_json_value(Action::ReceiveMessage, body)
    );
    // Not taken: a message without a required field, Messages not an array, not an object.
    for bad in [
        r#"{"Messages":[{"MessageId":"m1","Body":"b"}]}"#,
        r#"{"Messages":null}"#,
        r#"[]"#,
        r#"{"Messages":[{"MessageId":5,"ReceiptHandle":"r","Body":"b"}]}"#,
    ] {
        assert!(super::receive_json::decode(bad).is_none(), "{bad}");
        assert!(
            super::decode_json_value(Action::ReceiveMessage, bad).is_err(),
            "{bad}"
        );
    }
}

proptest::proptest! {
    /// MD5OfBody is checked without formatting the digest: the same answer as comparing the
    /// hexadecimal strings, ignoring case.
    #[test]
    fn md5_check_matches_the_string_comparison(
        data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        flips in proptest::collection::vec(proptest::bool::ANY, 32),
        other in "[0-9a-fA-F+ -]{0,34}",
    ) {
        let hex = md5_hex(&data);
        let digest = Md5::digest(&data);
        let cased: String = hex
            .chars()
            .zip(&flips)
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect();
        proptest::prop_assert!(super::hex_is(&cased, &digest));
        proptest::prop_assert_eq!(super::hex_is(&other, &digest), other.eq_ignore_ascii_case(&hex));
    }
}

/// The per-batch bodies are serialized from borrowed fields (no JSON tree): the whole document,
/// not just the fields other tests look at, is what SQS expects; awkward characters stay escaped.
#[test]
fn json_bodies_are_exactly_the_documented_shape() {
    let awkward = "rh \"quoted\" \\ back\nslash é \u{1}";
    let body = |req: &Request| -> Value {
        serde_json::from_slice(&encode(Protocol::Json, req).body).unwrap()
    };
    assert_eq!(
        body(&receive()),
        json!({"QueueUrl": "http://localhost:4566/000000000000/q", "MaxNumberOfMessages": 10,
               "WaitTimeSeconds": 0,
               "AttributeNames": ["SentTimestamp", "ApproximateReceiveCount"],
               "MessageSystemAttributeNames": ["SentTimestamp", "ApproximateReceiveCount"],
               "VisibilityTimeout": 30})
    );
    let entries = vec![
        ("0".to_string(), awkward.to_string()),
        ("1".into(), "b".into()),
    ];
    assert_eq!(
        body(&Request::DeleteBatch {
            queue_url: "u".into(),
            entries: entries.clone()
        }),
        json!({"QueueUrl": "u", "Entries": [{"Id": "0", "ReceiptHandle": awkward},
                                            {"Id": "1", "ReceiptHandle": "b"}]})
    );
    assert_eq!(
        body(&Request::ChangeVisibilityBatch {
            queue_url: "u".into(),
            entries: entries.clone(),
            visibility_timeout: 7
        }),
        json!({"QueueUrl": "u", "Entries": [
            {"Id": "0", "ReceiptHandle": awkward, "VisibilityTimeout": 7},
            {"Id": "1", "ReceiptHandle": "b", "VisibilityTimeout": 7}]})
    );
    assert_eq!(
        body(&Request::SendBatch {
            queue_url: "u".into(),
            entries,
            fifo: None
        }),
        json!({"QueueUrl": "u", "Entries": [{"Id": "0", "MessageBody": awkward},
                                            {"Id": "1", "MessageBody": "b"}]})
    );
}

/// A key of a batch reply's entry: the ones the decoders look for, spelled plainly or with an
/// escape, and another.
fn any_entry_key() -> impl proptest::strategy::Strategy<Value = String> {
    one_of(&[
        "\"Id\"",
        "\"MessageId\"",
        "\"Code\"",
        "\"Message\"",
        "\"SenderFault\"",
        "\"I\\u0064\"",
        "\"Other\"",
    ])
}

/// An entry of a batch reply: usually with a string Id and the fields SQS sends, often not.
fn any_entry() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let value = prop_oneof![
        3 => any_json(),
        1 => Just("false".to_string()),
    ];
    (
        proptest::bool::weighted(0.8),
        proptest::collection::vec((any_entry_key(), value), 0..4),
        any_json(),
        0u8..8,
    )
        .prop_map(|(plain, mut extra, other, shape)| {
            let mut fields = vec![];
            if plain {
                fields.push(("\"Id\"".to_string(), "\"e-1\"".to_string()));
            }
            fields.append(&mut extra);
            if shape == 7 {
                return other;
            }
            if shape == 6 {
                fields.reverse();
            }
            object(fields)
        })
}

proptest::proptest! {
    /// The DOM-free decoder of batch replies takes a reply only to give what the general
    /// decoder gives (and the plain replies SQS sends: the test below).
    #[test]
    fn batch_decoders_agree(
        done in proptest::collection::vec(any_entry(), 0..4),
        failed in proptest::collection::vec(any_entry(), 0..3),
        shape in 0u8..8,
        other in any_json(),
        action in 0u8..3,
    ) {
        let action = [Action::DeleteMessageBatch, Action::SendMessageBatch, Action::ChangeMessageVisibilityBatch][action as usize];
        let (d, f) = (format!("[{}]", done.join(",")), format!("[{}]", failed.join(",")));
        let text = match shape {
            0 => format!("{{\"Successful\":{d},\"Failed\":{f}}}"),
            1 => format!("{{\"Failed\":{f},\"Other\":{other},\"Successful\":{d}}}"),
            2 => format!("{{\"Successful\":{other},\"Failed\":{f}}}"),
            3 => format!("{{\"Successful\":{d},\"Successful\":{other}}}"),
            4 => format!(" {{\"F\\u0061iled\":{f}}} "),
            5 => format!("[{d},{f}]"),
            6 => "{}".to_string(),
            _ => format!("{{\"Successful\":{d},\"Failed\":null}}"),
        };
        let general = super::decode_json_value(action, &text);
        if let Some(fast) = super::batch_json::decode(&text) {
            proptest::prop_assert_eq!(Ok(fast), general, "{}", text);
        } else if shape == 0 && done.iter().chain(&failed).all(|e| e == "{\"Id\":\"e-1\"}") {
            // The plain reply (ids only) is taken.
            proptest::prop_assert!(false, "not taken: {}", text);
        }
    }
}

#[test]
fn batch_decoders_agree_on_the_plain_replies() {
    let body = r#"{"Successful":[{"Id":"0","MessageId":"m0","MD5OfMessageBody":"x"},{"Id":"1"}],"Failed":[{"Id":"2","Code":"ReceiptHandleIsInvalid","Message":"bad\nhandle","SenderFault":true},{"Id":"3"}]}"#;
    let fast = super::batch_json::decode(body).expect("the plain shape is taken");
    let Response::Batch { successful, failed } = &fast else {
        panic!("{fast:?}")
    };
    assert_eq!(
        successful,
        &vec![
            ("0".to_string(), Some("m0".to_string())),
            ("1".into(), None)
        ]
    );
    assert_eq!(failed.len(), 2);
    assert!(failed[0].sender_fault && !failed[1].sender_fault);
    assert_eq!(failed[1].code, "");
    for action in [
        Action::DeleteMessageBatch,
        Action::SendMessageBatch,
        Action::ChangeMessageVisibilityBatch,
    ] {
        assert_eq!(Ok(fast.clone()), super::decode_json_value(action, body));
    }
    // Not taken: an entry without an Id, an entry or a reply that is an array, a repeated key.
    for bad in [
        r#"{"Successful":[{"MessageId":"m"}]}"#,
        r#"{"Successful":[["0","m0"]]}"#,
        r#"[[{"Id":"0"}],[]]"#,
        r#"{"Successful":[],"Successful":[{"Id":"0"}]}"#,
    ] {
        assert!(super::batch_json::decode(bad).is_none(), "{bad}");
    }
}

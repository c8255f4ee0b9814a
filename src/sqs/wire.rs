//! Request encoding and response decoding for both SQS protocols. Pure functions: no I/O.

use super::{
    normalize_code, xml, Action, BatchFailure, Message, Protocol, Request, Response, SqsError,
};
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const QUERY_API_VERSION: &str = "2012-11-05";

/// An unsigned HTTP POST to the endpoint's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub path: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Encode a request for the given protocol.
pub fn encode(protocol: Protocol, req: &Request) -> HttpRequest {
    match protocol {
        Protocol::Json => encode_json(req),
        Protocol::Query => encode_query(req),
    }
}

fn encode_json(req: &Request) -> HttpRequest {
    let body = match req {
        Request::Receive {
            queue_url,
            max_messages,
            visibility_timeout,
            wait_seconds,
        } => {
            let mut v = json!({
                "QueueUrl": queue_url,
                "MaxNumberOfMessages": max_messages,
                "WaitTimeSeconds": wait_seconds,
                "AttributeNames": ["All"],
                "MessageSystemAttributeNames": ["All"],
            });
            if let Some(vt) = visibility_timeout {
                v["VisibilityTimeout"] = json!(vt);
            }
            v
        }
        Request::DeleteBatch { queue_url, entries } => json!({
            "QueueUrl": queue_url,
            "Entries": entries.iter().map(|(id, rh)| json!({"Id": id, "ReceiptHandle": rh})).collect::<Vec<_>>(),
        }),
        Request::SendBatch { queue_url, entries } => json!({
            "QueueUrl": queue_url,
            "Entries": entries.iter().map(|(id, b)| json!({"Id": id, "MessageBody": b})).collect::<Vec<_>>(),
        }),
        Request::CreateQueue { name, attributes } => {
            let mut v = json!({ "QueueName": name });
            if !attributes.is_empty() {
                v["Attributes"] = json!(attributes);
            }
            v
        }
        Request::GetAttributes { queue_url } => json!({
            "QueueUrl": queue_url,
            "AttributeNames": ["All"],
        }),
        Request::ChangeVisibilityBatch {
            queue_url,
            entries,
            visibility_timeout,
        } => json!({
            "QueueUrl": queue_url,
            "Entries": entries.iter().map(|(id, rh)| json!({"Id": id, "ReceiptHandle": rh, "VisibilityTimeout": visibility_timeout})).collect::<Vec<_>>(),
        }),
    };
    HttpRequest {
        path: "/",
        headers: vec![
            ("content-type", "application/x-amz-json-1.0".to_string()),
            ("x-amz-target", format!("AmazonSQS.{}", req.action().name())),
        ],
        body: serde_json::to_vec(&body).expect("JSON encoding cannot fail"),
    }
}

fn encode_query(req: &Request) -> HttpRequest {
    let mut f = form_urlencoded::Serializer::new(String::new());
    f.append_pair("Action", req.action().name());
    f.append_pair("Version", QUERY_API_VERSION);
    match req {
        Request::Receive {
            queue_url,
            max_messages,
            visibility_timeout,
            wait_seconds,
        } => {
            f.append_pair("QueueUrl", queue_url);
            f.append_pair("MaxNumberOfMessages", &max_messages.to_string());
            f.append_pair("WaitTimeSeconds", &wait_seconds.to_string());
            f.append_pair("AttributeName.1", "All");
            f.append_pair("MessageSystemAttributeName.1", "All");
            if let Some(vt) = visibility_timeout {
                f.append_pair("VisibilityTimeout", &vt.to_string());
            }
        }
        Request::DeleteBatch { queue_url, entries } => {
            f.append_pair("QueueUrl", queue_url);
            query_entries(
                &mut f,
                "DeleteMessageBatchRequestEntry",
                "ReceiptHandle",
                entries,
                None,
            );
        }
        Request::SendBatch { queue_url, entries } => {
            f.append_pair("QueueUrl", queue_url);
            query_entries(
                &mut f,
                "SendMessageBatchRequestEntry",
                "MessageBody",
                entries,
                None,
            );
        }
        Request::CreateQueue { name, attributes } => {
            f.append_pair("QueueName", name);
            for (i, (k, v)) in attributes.iter().enumerate() {
                f.append_pair(&format!("Attribute.{}.Name", i + 1), k);
                f.append_pair(&format!("Attribute.{}.Value", i + 1), v);
            }
        }
        Request::GetAttributes { queue_url } => {
            f.append_pair("QueueUrl", queue_url);
            f.append_pair("AttributeName.1", "All");
        }
        Request::ChangeVisibilityBatch {
            queue_url,
            entries,
            visibility_timeout,
        } => {
            f.append_pair("QueueUrl", queue_url);
            let vt = ("VisibilityTimeout", visibility_timeout.to_string());
            query_entries(
                &mut f,
                "ChangeMessageVisibilityBatchRequestEntry",
                "ReceiptHandle",
                entries,
                Some(vt),
            );
        }
    }
    HttpRequest {
        path: "/",
        headers: vec![(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )],
        body: f.finish().into_bytes(),
    }
}

/// Numbered batch entries of the query protocol: `<prefix>.<n>.Id`, `<prefix>.<n>.<field>` and an
/// optional extra field with the same value for every entry.
fn query_entries(
    f: &mut form_urlencoded::Serializer<'_, String>,
    prefix: &str,
    field: &str,
    entries: &[(String, String)],
    extra: Option<(&str, String)>,
) {
    for (i, (id, value)) in entries.iter().enumerate() {
        let p = format!("{prefix}.{}", i + 1);
        f.append_pair(&format!("{p}.Id"), id);
        f.append_pair(&format!("{p}.{field}"), value);
        if let Some((name, v)) = &extra {
            f.append_pair(&format!("{p}.{name}"), v);
        }
    }
}

pub fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Decode an HTTP response. `header` looks up a response header by lower-case name.
pub fn decode(
    protocol: Protocol,
    req: &Request,
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    endpoint: &str,
) -> Result<Response, SqsError> {
    let action = req.action();
    let proto_err = |message: String| SqsError::Protocol {
        action: action.name(),
        endpoint: endpoint.to_string(),
        message,
    };
    let text = std::str::from_utf8(body).map_err(|_| proto_err("response is not UTF-8".into()))?;
    if !(200..300).contains(&status) {
        return Err(decode_error(protocol, action, status, header, text));
    }
    let resp = match protocol {
        Protocol::Json => decode_json(action, text).map_err(proto_err)?,
        Protocol::Query => decode_xml(action, text).map_err(proto_err)?,
    };
    verify_md5(req, &resp).map_err(proto_err)?;
    Ok(resp)
}

/// Check the MD5 digests SQS returns against the bodies, as the AWS SDKs do: a mismatch means
/// corruption or a decoding bug, and the message must not be loaded.
fn verify_md5(req: &Request, resp: &Response) -> Result<(), String> {
    match (req, resp) {
        (_, Response::Received(msgs)) => {
            for m in msgs {
                if let Some(expected) = &m.md5_of_body {
                    if !expected.eq_ignore_ascii_case(&md5_hex(m.body.as_bytes())) {
                        return Err(format!(
                            "MD5 of the body of message {} does not match MD5OfBody",
                            m.message_id
                        ));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn shorten(s: &str, max: usize) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn decode_error(
    protocol: Protocol,
    action: Action,
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    text: &str,
) -> SqsError {
    let mut code = None;
    let mut message = None;
    if let Some(q) = header("x-amzn-query-error") {
        code = q.split(';').next().map(str::to_string);
    }
    let as_json = serde_json::from_str::<Value>(text).ok();
    let as_xml = if as_json.is_none() {
        xml::parse(text).ok()
    } else {
        None
    };
    if let Some(v) = &as_json {
        if code.is_none() {
            code = v
                .get("__type")
                .or_else(|| v.get("code"))
                .or_else(|| v.get("Code"))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .map(str::to_string);
    } else if let Some(root) = &as_xml {
        if let Some(err) = root.find("Error") {
            if code.is_none() {
                code = err.child_text("Code").map(str::to_string);
            }
            message = err.child_text("Message").map(str::to_string);
        }
    }
    let _ = protocol;
    let code = normalize_code(&code.unwrap_or_else(|| format!("HTTP{status}")));
    let message = match message {
        Some(m) => shorten(&m, 300),
        None if text.trim().is_empty() => format!("HTTP status {status} with an empty body"),
        None => format!("HTTP status {status}: {}", shorten(text, 200)),
    };
    SqsError::Aws {
        action: action.name(),
        status,
        code,
        message,
        attempts: 1,
    }
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn req_field(v: &Value, k: &str, what: &str) -> Result<String, String> {
    str_field(v, k).ok_or_else(|| format!("{what} without {k}"))
}

fn decode_json(action: Action, text: &str) -> Result<Response, String> {
    let v: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?
    };
    if !v.is_object() {
        return Err("the response is not a JSON object".into());
    }
    match action {
        Action::ReceiveMessage => {
            let mut out = Vec::new();
            if let Some(list) = v.get("Messages") {
                let list = list.as_array().ok_or("Messages is not an array")?;
                for m in list {
                    let attrs = m.get("Attributes");
                    let attr = |k: &str| attrs.and_then(|a| a.get(k)).and_then(Value::as_str);
                    out.push(Message {
                        message_id: req_field(m, "MessageId", "message")?,
                        receipt_handle: req_field(m, "ReceiptHandle", "message")?,
                        body: req_field(m, "Body", "message")?,
                        md5_of_body: str_field(m, "MD5OfBody"),
                        sent_timestamp_ms: attr("SentTimestamp").and_then(|s| s.parse().ok()),
                        receive_count: attr("ApproximateReceiveCount").and_then(|s| s.parse().ok()),
                    });
                }
            }
            Ok(Response::Received(out))
        }
        Action::DeleteMessageBatch
        | Action::SendMessageBatch
        | Action::ChangeMessageVisibilityBatch => {
            let mut successful = Vec::new();
            let mut failed = Vec::new();
            for s in v
                .get("Successful")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                successful.push((
                    req_field(s, "Id", "batch entry")?,
                    str_field(s, "MessageId"),
                ));
            }
            for f in v
                .get("Failed")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                failed.push(BatchFailure {
                    id: req_field(f, "Id", "failed entry")?,
                    code: str_field(f, "Code").unwrap_or_default(),
                    message: shorten(&str_field(f, "Message").unwrap_or_default(), 300),
                    sender_fault: f
                        .get("SenderFault")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
            Ok(Response::Batch { successful, failed })
        }
        Action::CreateQueue => Ok(Response::QueueUrl(req_field(
            &v,
            "QueueUrl",
            "CreateQueue response",
        )?)),
        Action::GetQueueAttributes => {
            let mut attrs = BTreeMap::new();
            if let Some(obj) = v.get("Attributes").and_then(Value::as_object) {
                for (k, val) in obj {
                    let s = match val {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    attrs.insert(k.clone(), s);
                }
            }
            Ok(Response::Attributes(attrs))
        }
    }
}

fn decode_xml(action: Action, text: &str) -> Result<Response, String> {
    let root = xml::parse(text)?;
    let result = |name: &str| root.find(name).ok_or_else(|| format!("no {name} element"));
    match action {
        Action::ReceiveMessage => {
            let r = result("ReceiveMessageResult")?;
            let mut out = Vec::new();
            for m in r.children_named("Message") {
                let mut attrs = BTreeMap::new();
                for a in m.children_named("Attribute") {
                    if let (Some(n), Some(v)) = (a.child_text("Name"), a.child_text("Value")) {
                        attrs.insert(n.to_string(), v.to_string());
                    }
                }
                let need = |k: &str| {
                    m.child_text(k)
                        .map(str::to_string)
                        .ok_or_else(|| format!("message without {k}"))
                };
                out.push(Message {
                    message_id: need("MessageId")?,
                    receipt_handle: need("ReceiptHandle")?,
                    body: need("Body")?,
                    md5_of_body: m.child_text("MD5OfBody").map(str::to_string),
                    sent_timestamp_ms: attrs.get("SentTimestamp").and_then(|s| s.parse().ok()),
                    receive_count: attrs
                        .get("ApproximateReceiveCount")
                        .and_then(|s| s.parse().ok()),
                });
            }
            Ok(Response::Received(out))
        }
        Action::DeleteMessageBatch
        | Action::SendMessageBatch
        | Action::ChangeMessageVisibilityBatch => {
            let (result_name, entry_name) = match action {
                Action::DeleteMessageBatch => {
                    ("DeleteMessageBatchResult", "DeleteMessageBatchResultEntry")
                }
                Action::SendMessageBatch => {
                    ("SendMessageBatchResult", "SendMessageBatchResultEntry")
                }
                _ => (
                    "ChangeMessageVisibilityBatchResult",
                    "ChangeMessageVisibilityBatchResultEntry",
                ),
            };
            let r = result(result_name)?;
            let mut successful = Vec::new();
            let mut failed = Vec::new();
            for e in r.children_named(entry_name) {
                let id = e.child_text("Id").ok_or("batch entry without Id")?;
                successful.push((
                    id.to_string(),
                    e.child_text("MessageId").map(str::to_string),
                ));
            }
            for e in r.children_named("BatchResultErrorEntry") {
                failed.push(BatchFailure {
                    id: e
                        .child_text("Id")
                        .ok_or("failed entry without Id")?
                        .to_string(),
                    code: e.child_text("Code").unwrap_or_default().to_string(),
                    message: shorten(e.child_text("Message").unwrap_or_default(), 300),
                    sender_fault: e.child_text("SenderFault") == Some("true"),
                });
            }
            Ok(Response::Batch { successful, failed })
        }
        Action::CreateQueue => {
            let r = result("CreateQueueResult")?;
            Ok(Response::QueueUrl(
                r.child_text("QueueUrl").ok_or("no QueueUrl")?.to_string(),
            ))
        }
        Action::GetQueueAttributes => {
            let r = result("GetQueueAttributesResult")?;
            let mut attrs = BTreeMap::new();
            for a in r.children_named("Attribute") {
                if let (Some(n), Some(v)) = (a.child_text("Name"), a.child_text("Value")) {
                    attrs.insert(n.to_string(), v.to_string());
                }
            }
            Ok(Response::Attributes(attrs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    fn receive() -> Request {
        Request::Receive {
            queue_url: "http://localhost:4566/000000000000/q".into(),
            max_messages: 10,
            visibility_timeout: Some(30),
            wait_seconds: 0,
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
        assert_eq!(v["MessageSystemAttributeNames"][0], "All");
    }

    #[test]
    fn query_requests_are_form_encoded() {
        let r = encode(Protocol::Query, &receive());
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.starts_with("Action=ReceiveMessage&Version=2012-11-05&QueueUrl=http%3A%2F%2Flocalhost%3A4566%2F000000000000%2Fq"));
        assert!(body.contains("VisibilityTimeout=30"));
        let r = encode(
            Protocol::Query,
            &Request::SendBatch {
                queue_url: "u".into(),
                entries: vec![("0".into(), "a&b=c \"é\"".into()), ("1".into(), "x".into())],
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
                Request::SendBatch { queue_url: "u".into(), entries: vec![] },
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
}

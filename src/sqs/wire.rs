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

/// The system attributes a receive asks for: the only two the client reads (the loader's latency
/// and its poison-message threshold). Asking for `All` made each message of a reply carry two
/// more (`SenderId`, `ApproximateFirstReceiveTimestamp`; on a FIFO queue three more again) for
/// the server to write and the client to read past: 77 bytes per message on fauxqs, a reply of
/// 10 messages 4,374 bytes instead of 5,144.
pub const RECEIVE_ATTRIBUTES: [&str; 2] = ["SentTimestamp", "ApproximateReceiveCount"];

/// The bodies of the requests made per batch, serialized from borrowed fields: no JSON tree
/// and no copy of the receipt handles or message bodies (`json!` built and sorted both).
mod body {
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Receive<'a> {
        pub queue_url: &'a str,
        pub max_number_of_messages: u32,
        pub wait_time_seconds: i32,
        pub attribute_names: [&'static str; 2],
        pub message_system_attribute_names: [&'static str; 2],
        #[serde(skip_serializing_if = "Option::is_none")]
        pub receive_request_attempt_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub visibility_timeout: Option<i32>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Batch<'a, E> {
        pub queue_url: &'a str,
        pub entries: Vec<E>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Handle<'a> {
        pub id: &'a str,
        pub receipt_handle: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub visibility_timeout: Option<i32>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Send<'a> {
        pub id: &'a str,
        pub message_body: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub message_group_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub message_deduplication_id: Option<String>,
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON encoding cannot fail")
}

fn handles<'a>(entries: &'a [(String, String)], vt: Option<i32>) -> Vec<body::Handle<'a>> {
    entries
        .iter()
        .map(|(id, rh)| body::Handle {
            id,
            receipt_handle: rh,
            visibility_timeout: vt,
        })
        .collect()
}

fn encode_json(req: &Request) -> HttpRequest {
    let body = match req {
        Request::Receive {
            queue_url,
            max_messages,
            visibility_timeout,
            wait_seconds,
            attempt_id,
        } => to_json(&body::Receive {
            queue_url,
            max_number_of_messages: *max_messages,
            wait_time_seconds: *wait_seconds,
            // Both the deprecated name and the current one: servers read one or the other.
            attribute_names: RECEIVE_ATTRIBUTES,
            message_system_attribute_names: RECEIVE_ATTRIBUTES,
            receive_request_attempt_id: attempt_id.as_deref(),
            visibility_timeout: *visibility_timeout,
        }),
        Request::DeleteBatch { queue_url, entries } => to_json(&body::Batch {
            queue_url,
            entries: handles(entries, None),
        }),
        Request::SendBatch {
            queue_url,
            entries,
            fifo,
        } => to_json(&body::Batch {
            queue_url,
            entries: entries
                .iter()
                .map(|(id, b)| body::Send {
                    id,
                    message_body: b,
                    message_group_id: fifo.as_ref().map(|(group, _)| group.as_str()),
                    message_deduplication_id: fifo
                        .as_ref()
                        .map(|(_, dedup)| format!("{dedup}-{id}")),
                })
                .collect(),
        }),
        Request::ChangeVisibilityBatch {
            queue_url,
            entries,
            visibility_timeout,
        } => to_json(&body::Batch {
            queue_url,
            entries: handles(entries, Some(*visibility_timeout)),
        }),
        Request::CreateQueue { name, attributes } => {
            let mut v = json!({ "QueueName": name });
            if !attributes.is_empty() {
                v["Attributes"] = json!(attributes);
            }
            to_json(&v)
        }
        Request::GetAttributes { queue_url } => to_json(&json!({
            "QueueUrl": queue_url,
            "AttributeNames": ["All"],
        })),
    };
    HttpRequest {
        path: "/",
        headers: vec![
            ("content-type", "application/x-amz-json-1.0".to_string()),
            ("x-amz-target", format!("AmazonSQS.{}", req.action().name())),
        ],
        body,
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
            attempt_id,
        } => {
            f.append_pair("QueueUrl", queue_url);
            if let Some(a) = attempt_id {
                f.append_pair("ReceiveRequestAttemptId", a);
            }
            f.append_pair("MaxNumberOfMessages", &max_messages.to_string());
            f.append_pair("WaitTimeSeconds", &wait_seconds.to_string());
            for (i, name) in RECEIVE_ATTRIBUTES.iter().enumerate() {
                f.append_pair(&format!("AttributeName.{}", i + 1), name);
                f.append_pair(&format!("MessageSystemAttributeName.{}", i + 1), name);
            }
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
        Request::SendBatch {
            queue_url,
            entries,
            fifo,
        } => {
            f.append_pair("QueueUrl", queue_url);
            query_entries(
                &mut f,
                "SendMessageBatchRequestEntry",
                "MessageBody",
                entries,
                None,
            );
            if let Some((group, dedup)) = fifo {
                for (i, (id, _)) in entries.iter().enumerate() {
                    let p = format!("SendMessageBatchRequestEntry.{}", i + 1);
                    f.append_pair(&format!("{p}.MessageGroupId"), group);
                    f.append_pair(
                        &format!("{p}.MessageDeduplicationId"),
                        &format!("{dedup}-{id}"),
                    );
                }
            }
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
    crate::hex::hex(&Md5::digest(data))
}

/// Whether `hex` (hexadecimal digits, either case) spells `digest`: no string made per check.
fn hex_is(hex: &str, digest: &[u8]) -> bool {
    let nibble = |c: u8| char::from(c).to_digit(16);
    hex.len() == 2 * digest.len()
        && hex.as_bytes().chunks(2).zip(digest).all(|(p, &b)| {
            nibble(p[0]).zip(nibble(p[1])).map(|(h, l)| h * 16 + l) == Some(u32::from(b))
        })
}

/// Decode an HTTP response. `header` looks up a response header by lower-case name. A non-2xx
/// reply that is not an SQS error document is quoted in the error only with
/// `reveal_foreign_bodies`.
pub fn decode(
    protocol: Protocol,
    req: &Request,
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    endpoint: &str,
    reveal_foreign_bodies: bool,
) -> Result<Response, SqsError> {
    let action = req.action();
    let proto_err = |message: String| SqsError::Protocol {
        action: action.name(),
        endpoint: endpoint.to_string(),
        message,
    };
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(body);
        return Err(decode_error(
            action,
            status,
            header,
            &text,
            reveal_foreign_bodies,
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| proto_err("response is not UTF-8".into()))?;
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
                    if !hex_is(expected, &Md5::digest(m.body.as_bytes())) {
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
    action: Action,
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    text: &str,
    reveal_foreign_bodies: bool,
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
    let code = normalize_code(&code.unwrap_or_else(|| format!("HTTP{status}")));
    let message = match message {
        Some(m) => shorten(&m, 300),
        None if text.trim().is_empty() => format!("HTTP status {status} with an empty body"),
        None if reveal_foreign_bodies => format!("HTTP status {status}: {}", shorten(text, 200)),
        None => format!(
            "HTTP status {status}, and the reply is not an SQS error document (its body is shown to superusers only)"
        ),
    };
    SqsError::Aws {
        action: action.name(),
        status,
        code,
        message,
        attempts: 1,
        advice: None,
    }
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn req_field(v: &Value, k: &str, what: &str) -> Result<String, String> {
    str_field(v, k).ok_or_else(|| format!("{what} without {k}"))
}

fn decode_json(action: Action, text: &str) -> Result<Response, String> {
    match action {
        Action::ReceiveMessage => {
            if let Some(msgs) = receive_json::decode(text) {
                return Ok(Response::Received(msgs));
            }
        }
        Action::DeleteMessageBatch
        | Action::SendMessageBatch
        | Action::ChangeMessageVisibilityBatch => {
            if let Some(reply) = batch_json::decode(text) {
                return Ok(reply);
            }
        }
        Action::CreateQueue | Action::GetQueueAttributes => {}
    }
    decode_json_value(action, text)
}

/// The batch actions' JSON (DeleteMessageBatch after every batch, SendMessageBatch,
/// ChangeMessageVisibilityBatch) decoded straight into entries, without a `Value` tree (a map
/// per entry, freed right after). Like [`receive_json`], it takes only the replies that decode
/// without an error, and answers `None` for anything else: the general decoder decides. Both
/// agree on what they both take (a proptest checks), with one difference shared with
/// [`receive_json`]: a field neither reads is only checked for JSON syntax here, so a value
/// the `Value` tree refuses there (a number beyond `f64`, nesting beyond 128 levels, a lone
/// UTF-16 surrogate escape) does not make the reply an error.
mod batch_json {
    use super::{shorten, BatchFailure, Response};
    use serde::de::{value::MapAccessDeserializer, Deserialize, Deserializer, MapAccess, Visitor};
    use std::fmt;
    use std::marker::PhantomData;

    pub fn decode(text: &str) -> Option<Response> {
        let reply = serde_json::from_str::<Object<Reply>>(text).ok()?.0;
        Some(Response::Batch {
            successful: reply
                .successful
                .into_iter()
                .flatten()
                .map(|e| (e.0.id, e.0.message_id))
                .collect(),
            failed: reply
                .failed
                .into_iter()
                .flatten()
                .map(|f| BatchFailure {
                    id: f.0.id,
                    code: f.0.code.unwrap_or_default(),
                    message: shorten(&f.0.message.unwrap_or_default(), 300),
                    sender_fault: f.0.sender_fault.unwrap_or(false),
                })
                .collect(),
        })
    }

    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Successful", default)]
        successful: Option<Vec<Object<Done>>>,
        #[serde(rename = "Failed", default)]
        failed: Option<Vec<Object<Failed>>>,
    }

    #[derive(serde::Deserialize)]
    struct Done {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "MessageId", default)]
        message_id: Option<String>,
    }

    #[derive(serde::Deserialize)]
    struct Failed {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "Code", default)]
        code: Option<String>,
        #[serde(rename = "Message", default)]
        message: Option<String>,
        #[serde(rename = "SenderFault", default)]
        sender_fault: Option<bool>,
    }

    /// A `T` read from a JSON object only: a derived struct also reads an array, by position,
    /// where the general decoder finds no fields.
    struct Object<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = Object<T>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                    T::deserialize(MapAccessDeserializer::new(map)).map(Object)
                }
            }
            d.deserialize_map(V(PhantomData))
        }
    }
}

/// The general JSON decoder, through a `Value`: every action, and every reply
/// [`receive_json`] and [`batch_json`] do not take (it decides, with its error messages).
/// Public for `make bench ARGS=client`.
pub fn decode_json_value(action: Action, text: &str) -> Result<Response, String> {
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

/// ReceiveMessage's JSON decoded straight into [`Message`]s, without a `Value` tree: the
/// loader decodes one per ten messages, and the tree (a map and a string per key and value,
/// then a copy of each field kept) was most of the decoding's allocations. It takes only the
/// responses that decode without an error; for anything else it answers `None`, and the
/// general decoder gives the answer. Both agree on what they both take (a proptest checks).
mod receive_json {
    use super::Message;
    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    pub fn decode(text: &str) -> Option<Vec<Message>> {
        serde_json::from_str::<Response>(text).ok().map(|r| r.0)
    }

    struct Response(Vec<Message>);

    /// A message; `None` when a required field is missing or not a string.
    struct Entry(Option<Message>);

    /// A string, or `None` for any other JSON value (which is skipped).
    struct Text(Option<String>);

    /// The attributes kept: SentTimestamp and ApproximateReceiveCount, each when a string.
    #[derive(Default)]
    struct Attributes {
        sent: Option<String>,
        count: Option<String>,
    }

    /// Either an object's attributes or, for any other value, none.
    struct MaybeAttributes(Attributes);

    /// A key, compared without keeping it.
    struct Key(KeyName);
    enum KeyName {
        Messages,
        MessageId,
        ReceiptHandle,
        Body,
        Md5OfBody,
        Attributes,
        SentTimestamp,
        ApproximateReceiveCount,
        Other,
    }

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
                    Ok(Key(match k {
                        "Messages" => KeyName::Messages,
                        "MessageId" => KeyName::MessageId,
                        "ReceiptHandle" => KeyName::ReceiptHandle,
                        "Body" => KeyName::Body,
                        "MD5OfBody" => KeyName::Md5OfBody,
                        "Attributes" => KeyName::Attributes,
                        "SentTimestamp" => KeyName::SentTimestamp,
                        "ApproximateReceiveCount" => KeyName::ApproximateReceiveCount,
                        _ => KeyName::Other,
                    }))
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> Deserialize<'de> for Response {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Response, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Response;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a ReceiveMessage response")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Response, A::Error> {
                    // A repeated key: the last one counts, as in a `Value`.
                    let mut messages = Vec::new();
                    while let Some(Key(k)) = map.next_key()? {
                        match k {
                            KeyName::Messages => {
                                messages = map
                                    .next_value::<Vec<Entry>>()?
                                    .into_iter()
                                    .map(|e| e.0)
                                    .collect::<Option<Vec<Message>>>()
                                    .ok_or_else(|| de::Error::custom("incomplete message"))?;
                            }
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    Ok(Response(messages))
                }
            }
            d.deserialize_map(V)
        }
    }

    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entry;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a message")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
                    let (mut id, mut handle, mut body, mut md5) = (None, None, None, None);
                    let mut attrs = Attributes::default();
                    while let Some(Key(k)) = map.next_key()? {
                        match k {
                            KeyName::MessageId => id = map.next_value::<Text>()?.0,
                            KeyName::ReceiptHandle => handle = map.next_value::<Text>()?.0,
                            KeyName::Body => body = map.next_value::<Text>()?.0,
                            KeyName::Md5OfBody => md5 = map.next_value::<Text>()?.0,
                            KeyName::Attributes => attrs = map.next_value::<MaybeAttributes>()?.0,
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    Ok(Entry(match (id, handle, body) {
                        (Some(message_id), Some(receipt_handle), Some(body)) => Some(Message {
                            message_id,
                            receipt_handle,
                            body,
                            md5_of_body: md5,
                            sent_timestamp_ms: attrs.sent.and_then(|s| s.parse().ok()),
                            receive_count: attrs.count.and_then(|s| s.parse().ok()),
                        }),
                        _ => None,
                    }))
                }
            }
            d.deserialize_map(V)
        }
    }

    impl<'de> Deserialize<'de> for MaybeAttributes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MaybeAttributes, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = MaybeAttributes;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any value")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut a = Attributes::default();
                    while let Some(Key(k)) = map.next_key()? {
                        match k {
                            KeyName::SentTimestamp => a.sent = map.next_value::<Text>()?.0,
                            KeyName::ApproximateReceiveCount => {
                                a.count = map.next_value::<Text>()?.0
                            }
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    Ok(MaybeAttributes(a))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                    IgnoredAny.visit_seq(seq)?;
                    Ok(MaybeAttributes(Attributes::default()))
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                    Ok(MaybeAttributes(Attributes::default()))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                    Ok(MaybeAttributes(Attributes::default()))
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                    Ok(MaybeAttributes(Attributes::default()))
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                    Ok(MaybeAttributes(Attributes::default()))
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                    Ok(MaybeAttributes(Attributes::default()))
                }
                fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                    Ok(MaybeAttributes(Attributes::default()))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Text;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any value")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                    Ok(Text(Some(s.to_string())))
                }
                fn visit_string<E: de::Error>(self, s: String) -> Result<Text, E> {
                    Ok(Text(Some(s)))
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
                    IgnoredAny.visit_map(map)?;
                    Ok(Text(None))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
                    IgnoredAny.visit_seq(seq)?;
                    Ok(Text(None))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
                    Ok(Text(None))
                }
                fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                    Ok(Text(None))
                }
            }
            d.deserialize_any(V)
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
#[path = "wire_tests.rs"]
mod tests;

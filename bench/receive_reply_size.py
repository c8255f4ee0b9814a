#!/usr/bin/env python3
"""Bytes of a ReceiveMessage reply of 10 messages, asking for All system attributes and for the
two sqs_loader reads (SentTimestamp, ApproximateReceiveCount): what src/sqs/wire.rs's
RECEIVE_ATTRIBUTES saves per message. Standard library only; for an emulator that does not check
signatures (fauxqs):
    bash scripts/sqs.sh start fauxqs
    python3 bench/receive_reply_size.py "$(. scripts/lib.sh; emulator_port fauxqs)"
"""
import json
import sys
import urllib.request

BASE = f"http://127.0.0.1:{sys.argv[1]}/"
BODY = json.dumps({"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0",
                   "device_type": "android", "ip": "199.172.111.135", "locale": "RU",
                   "device_id": "593-47-5928"})


def call(target, body):
    req = urllib.request.Request(BASE, data=json.dumps(body).encode(), headers={
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": "AmazonSQS." + target,
        "authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, "
                         "SignedHeaders=host, Signature=00"})
    with urllib.request.urlopen(req) as r:
        return r.read()


queue = json.loads(call("CreateQueue", {"QueueName": "receive-reply-size"}))["QueueUrl"]
try:
    call("SendMessageBatch", {"QueueUrl": queue, "Entries": [
        {"Id": str(i), "MessageBody": BODY} for i in range(10)]})
    sizes = {}
    for label, names in (("All", ["All"]),
                         ("two", ["SentTimestamp", "ApproximateReceiveCount"])):
        reply = call("ReceiveMessage", {"QueueUrl": queue, "MaxNumberOfMessages": 10,
                                        "AttributeNames": names,
                                        "MessageSystemAttributeNames": names,
                                        "VisibilityTimeout": 0})
        n = len(json.loads(reply)["Messages"])
        sizes[label] = (len(reply), n)
        print(f"{label:>4}: {len(reply)} bytes for {n} messages")
    (a, n), (b, _) = sizes["All"], sizes["two"]
    print(f"saved: {a - b} bytes per reply, {(a - b) / n:.0f} per message ({(a - b) / a:.0%})")
finally:
    call("DeleteQueue", {"QueueUrl": queue})

"""The baseline: the loader "most people would write instead", as a typical solution of this
exercise does it. boto3 receives 10 messages, each is parsed and masked in Python (SHA-256 with
hashlib for the duplicate-preserving column, RSA-OAEP with `cryptography` for recovery), psycopg2
inserts the rows, commits, and then the batch is deleted. One process, one message batch at a time.

Prints the seconds it took to drain the queue."""
import argparse
import hashlib
import json
import time

import boto3
import psycopg2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

p = argparse.ArgumentParser()
p.add_argument("--endpoint", required=True)
p.add_argument("--queue-url", required=True)
p.add_argument("--dsn", required=True)
p.add_argument("--public-key", required=True)
a = p.parse_args()

sqs = boto3.client("sqs", endpoint_url=a.endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
with open(a.public_key, "rb") as f:
    public_key = serialization.load_pem_public_key(f.read())
oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
conn = psycopg2.connect(a.dsn)
cur = conn.cursor()
cur.execute("CREATE TABLE IF NOT EXISTS py_pii_vault(token text PRIMARY KEY, encrypted bytea)")
cur.execute("TRUNCATE py_pii_vault")
conn.commit()


def version_to_int(v):
    parts = [int(x) for x in v.split(".")] + [0, 0]
    return parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]


def mask(value):
    token = hashlib.sha256(value.encode()).hexdigest()
    cur.execute("INSERT INTO py_pii_vault VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (token, public_key.encrypt(value.encode(), oaep)))
    return token


start = time.monotonic()
while True:
    resp = sqs.receive_message(QueueUrl=a.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                               AttributeNames=["SentTimestamp"])
    msgs = resp.get("Messages", [])
    if not msgs:
        break
    for m in msgs:
        try:
            e = json.loads(m["Body"])
            row = (e["user_id"], e.get("device_type"), mask(e["ip"]), mask(e["device_id"]),
                   e.get("locale"), version_to_int(e["app_version"]),
                   time.strftime("%Y-%m-%d", time.gmtime(int(m["Attributes"]["SentTimestamp"]) / 1000)))
        except (KeyError, ValueError, TypeError):
            continue  # a malformed message: dropped, as most solutions do
        cur.execute("INSERT INTO user_logins VALUES (%s, %s, %s, %s, %s, %s, %s)", row)
    conn.commit()
    sqs.delete_message_batch(QueueUrl=a.queue_url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])
print(f"{time.monotonic() - start:.3f}")

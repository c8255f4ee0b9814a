#!/bin/sh
# LocalStack ready hook: create login-queue and send it the 100 sample messages.
set -eu
url=$(awslocal sqs create-queue --queue-name login-queue --query QueueUrl --output text)
while IFS= read -r body; do
  awslocal sqs send-message --queue-url "$url" --message-body "$body" >/dev/null
done < /data/sample_login_messages.jsonl
echo "login-queue: $(awslocal sqs get-queue-attributes --queue-url "$url" \
  --attribute-names ApproximateNumberOfMessages --query Attributes.ApproximateNumberOfMessages --output text) messages"

-- Privileges and comments for everything above (runs last).
--
-- Not for PUBLIC: reaching the network and consuming queues (sqs_*), minting tokens (mask_pii*
-- is a guessing oracle for low-entropy values such as IPv4 addresses), revealing values
-- (unmask_pii), changing keys, erasing, loading. Grant them to chosen roles; see the README.
REVOKE EXECUTE ON FUNCTION
    @extschema@.sqs_pull(text, integer, integer, integer),
    @extschema@.sqs_delete(text, text[]),
    @extschema@.sqs_send(text, text[]),
    @extschema@.sqs_send(text, text[], text),
    @extschema@.sqs_create_queue(text, jsonb),
    @extschema@.sqs_queue_attributes(text),
    @extschema@.mask_pii(text),
    @extschema@.mask_pii_batch(text[]),
    @extschema@.sealed_values(text[]),
    @extschema@.set_rsa_public_key(text),
    @extschema@.forget_pii(text)
FROM PUBLIC;
-- Every role may call the functions that take a secret: they refuse the wrong roles themselves,
-- once the secret is masked (sqs_loader.require_caller); PostgreSQL's own refusal would log it.
GRANT EXECUTE ON FUNCTION
    @extschema@.unmask_pii(text, text),
    @extschema@.unmask_pii(text, text, text),
    @extschema@.set_token_key(bytea),
    @extschema@.rotate_rsa_key(text, text, text)
TO PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.sealed_values(text[]) TO sqs_loader_unmask;
REVOKE EXECUTE ON PROCEDURE
    @extschema@.load_user_logins(text, integer, integer, bigint, bigint, bigint, bigint, bigint)
FROM PUBLIC;
REVOKE ALL ON @extschema@.load_health FROM PUBLIC;
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA sqs_loader FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA sqs_loader FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA sqs_loader FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.sqs_pull(text, integer, integer, integer) IS
  'Receive up to n messages from an SQS queue (parallel ReceiveMessage calls of <= 10, stops when the queue is empty). Messages stay in the queue until deleted.';
COMMENT ON FUNCTION @extschema@.sqs_delete(text, text[]) IS
  'Delete messages by receipt handle (DeleteMessageBatch, chunks of 10 in parallel); returns how many were deleted; failed entries raise a WARNING.';
COMMENT ON FUNCTION @extschema@.sqs_send(text, text[]) IS
  'Send messages (SendMessageBatch, chunks of <= 10 and <= 256 KiB in parallel); returns how many were sent; failed entries raise a WARNING.';
COMMENT ON FUNCTION @extschema@.sqs_send(text, text[], text) IS
  'Send messages in one message group (what a FIFO queue requires), in order, each with its own deduplication id (a retried request is not sent twice); returns how many were sent.';
COMMENT ON FUNCTION @extschema@.sqs_create_queue(text, jsonb) IS
  'Create a queue if it does not exist (idempotent) and return its URL. Optional attributes, e.g. {"VisibilityTimeout": "60"}.';
COMMENT ON FUNCTION @extschema@.sqs_queue_attributes(text) IS
  'All attributes of a queue as jsonb (ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible, ...).';
COMMENT ON FUNCTION @extschema@.mask_pii(text) IS
  'Token of a value, to look it up in the data (WHERE masked_ip = mask_pii(''203.0.113.7'')): deterministic, keyed. Stores nothing; every distinct value looked up is audited. NULL in, NULL out.';
COMMENT ON FUNCTION sqs_loader.pull(text, integer, integer, integer, boolean) IS
  'Receive for load_user_logins(): one row of column arrays; takes the batch prefetched for the same request and, with prefetch, receives the next one in the background.';
COMMENT ON FUNCTION sqs_loader.release_prefetched() IS
  'Make the messages of a pending prefetch visible again (end of a run); returns how many.';
COMMENT ON FUNCTION sqs_loader.delete_after_commit(text, text[]) IS
  'Delete messages in the background once the current transaction commits, never if it aborts (internal to the loader).';
COMMENT ON FUNCTION sqs_loader.batch_abandoned() IS
  'The batch being loaded failed: give its messages back to the queue now and stop keeping them invisible (internal to the loader).';
COMMENT ON FUNCTION sqs_loader.launch_supervisor() IS
  'Start this database''s background-worker supervisor once the transaction commits (internal to start_worker()).';
COMMENT ON FUNCTION sqs_loader.run_slot(text, integer) IS
  'Whether this run may load a batch of the queue now: it holds one of the queue''s sqs_loader.max_runs_per_queue slots (a session advisory lock) or takes a free one, waiting up to wait_ms (internal to the loader).';
COMMENT ON FUNCTION sqs_loader.run_slot_release() IS
  'Give up the queue slot this backend''s run holds (internal to run_end(); an aborted transaction gives it up too).';
COMMENT ON FUNCTION sqs_loader.check_queue_url(text) IS
  'Raise the error a request to this queue URL would raise for its form, the host allow-list or exposed credentials (internal to start_worker()).';
COMMENT ON FUNCTION sqs_loader.loader_settings() IS
  'The loader''s settings (sqs_loader.batch_size, visibility_timeout, ...), typed: what a load run starts from.';
COMMENT ON FUNCTION sqs_loader.delete_collect(boolean) IS
  'Collect finished background deletes (all of them when wait): how many were deleted; failures as WARNING/ERROR.';
COMMENT ON FUNCTION sqs_loader.mask_values(text[]) IS
  'Tokens of many values, aligned with them (NULL stays NULL), storing the values not yet in the vault with one vault_store() call: the masking prepare_batch() does, as one SQL call on an array (internal; what the masking benchmark measures).';
COMMENT ON FUNCTION sqs_loader.prepare_batch(bigint, text[], text[], timestamptz[]) IS
  'load_batch()''s first step: parse the distinct messages of a batch, claim their ids in processed_messages (an id already there is skipped), mask the IPs and device ids of the claimed valid ones (one vault_store() call); column arrays in message id order.';
COMMENT ON FUNCTION @extschema@.mask_pii_batch(text[]) IS
  'Tokens of many values to look them up: one (value, token) row per distinct non-null value. Stores nothing; the call is audited with the number of values.';
COMMENT ON FUNCTION @extschema@.app_version_int(text) IS
  'Pack a version "major[.minor[.patch]]" as major*1000000 + minor*1000 + patch (order-preserving, collision-free).';
COMMENT ON FUNCTION @extschema@.app_version_text(integer) IS
  'The "major.minor.patch" text of a packed app_version.';
COMMENT ON FUNCTION sqs_loader.version() IS 'The sqs_loader library version (calling it loads the library and its settings).';
COMMENT ON FUNCTION sqs_loader.parse_login(text) IS
  'Validate and flatten a message body, unwrapping an SNS notification or EventBridge event (envelope, event_at: its kind and time); reject_reason/reject_detail are set when it is not a login event.';
COMMENT ON FUNCTION sqs_loader.reject_reasons() IS 'Every rejection reason and what it means.';
COMMENT ON FUNCTION sqs_loader.new_token_key() IS '32 random bytes from the OS CSPRNG.';
COMMENT ON FUNCTION sqs_loader.token_key_id(bytea) IS 'Public identifier of a token key (not the key).';
COMMENT ON FUNCTION sqs_loader.rsa_key_info(text) IS 'Validate an RSA public key; its fingerprint, normalised PEM and bits.';
COMMENT ON FUNCTION sqs_loader.private_key_fingerprint(text, text) IS 'Fingerprint of the public half of an RSA private key.';
COMMENT ON FUNCTION sqs_loader.unseal(text, bytea, bytea, text, text) IS 'Decrypt one vault entry with an RSA private key (internal).';
COMMENT ON FUNCTION sqs_loader.rewrap(bytea, text, text, text) IS 'Re-wrap a data key under a new RSA public key (internal).';
COMMENT ON FUNCTION sqs_loader.audit_access(text, text[], text[]) IS 'Commit PII audit rows from a background worker before anything is returned (internal).';
COMMENT ON FUNCTION sqs_loader.protect_statement(text[]) IS
  'Mask private keys and the given secrets in the running statement, its pg_stat_activity entry and later log lines (internal; first call of every function that takes a secret).';
COMMENT ON FUNCTION sqs_loader.require_caller(text, text) IS
  'Refuse (42501) unless the calling role is a superuser or has the privileges of the given role (internal).';
COMMENT ON FUNCTION sqs_loader.require_preloaded(text) IS
  'Refuse (55000) unless sqs_loader is in shared_preload_libraries, so that every session masks keys in the log (internal).';

-- What the loader makes of message bodies: the columns of a login event, or the reason (and
-- the detail) it rejects a body with.
SELECT reason FROM sqs_loader.reject_reasons() ORDER BY reason;

-- Valid events: flattened; the IP canonical, app_version packed.
SELECT p.user_id, p.device_type, p.ip, p.locale, p.device_id, p.app_version
  FROM unnest(ARRAY[
    '{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}',
    '{"user_id": "u1", "app_version": "0.96", "device_type": null, "ip": "2001:DB8::1", "device_id": "d"}',
    '{"user_id": "u2", "app_version": "2.00", "ip": "10.0.0.1", "device_id": "d", "extra": {"ignored": true}}',
    '{"user_id": "u3 (IPv4-mapped IPv6: the IPv4 address)", "app_version": "1", "ip": "::ffff:203.0.113.7", "device_id": "d"}',
    '{"user_id": "u4 (numbers beyond f64, deep nesting: ignored)", "app_version": "1", "ip": "203.0.113.7", "device_id": "d", "n": 1e400, "deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}'
  ]) AS b(body)
  CROSS JOIN LATERAL sqs_loader.parse_login(b.body) AS p;

-- Rejected bodies, one per reason.
SELECT b.what, p.reject_reason, p.reject_detail
  FROM (VALUES
    ('the malformed sample message', '{"foo": "oops_wrong_msg_type", "bar": "123"}'),
    ('not JSON', 'not json'),
    ('an array', '[1, 2]'),
    ('a number beyond f64', '1e400'),
    ('a key twice', '{"user_id": "u", "user_id": "v", "ip": "1.2.3.4", "device_id": "d", "app_version": "1"}'),
    ('empty user_id', '{"user_id": "", "ip": "1.2.3.4", "device_id": "d", "app_version": "1"}'),
    ('numeric device_type', '{"user_id": "u", "ip": "1.2.3.4", "device_id": "d", "app_version": "1", "device_type": 7}'),
    ('a 44-character locale', '{"user_id": "u", "ip": "1.2.3.4", "device_id": "d", "app_version": "1", "locale": "a-locale-name-much-longer-than-32-characters"}'),
    ('no ip', '{"user_id": "u", "device_id": "d", "app_version": "1"}'),
    ('three-part ip', '{"user_id": "u", "ip": "1.2.3", "device_id": "d", "app_version": "1"}'),
    ('ip with a zone id', '{"user_id": "u", "ip": "fe80::1%eth0", "device_id": "d", "app_version": "1"}'),
    ('no device_id', '{"user_id": "u", "ip": "1.2.3.4", "app_version": "1"}'),
    ('empty device_id', '{"user_id": "u", "ip": "1.2.3.4", "device_id": "", "app_version": "1"}'),
    ('no app_version', '{"user_id": "u", "ip": "1.2.3.4", "device_id": "d"}'),
    ('app_version v2', '{"user_id": "u", "ip": "1.2.3.4", "device_id": "d", "app_version": "v2"}'),
    ('app_version 2147.0.0', '{"user_id": "u", "ip": "1.2.3.4", "device_id": "d", "app_version": "2147.0.0"}')
  ) AS b(what, body)
  CROSS JOIN LATERAL sqs_loader.parse_login(b.body) AS p;

//! The sqs_* functions against LocalStack, from SQL.

#[pgrx::pg_schema]
mod tests {
    #[allow(unused_imports)]
    use crate::pg_tests::*;

    fn localstack() -> String {
        one("SELECT current_setting('sqs_loader_test.localstack')")
    }

    /// A fresh queue on LocalStack, with test credentials set for this transaction.
    fn fresh_queue(prefix: &str) -> String {
        run("SET LOCAL sqs_loader.aws_access_key_id = 'test'");
        run("SET LOCAL sqs_loader.aws_secret_access_key = 'test'");
        run(&format!(
            "SET LOCAL sqs_loader.endpoint = {}",
            quote(&localstack())
        ));
        let name = format!("{prefix}-{:08x}", getrandom::u32().unwrap());
        let url: String = one(&format!("SELECT sqs_create_queue({})", quote(&name)));
        run("RESET sqs_loader.endpoint");
        url
    }

    fn send_n(url: &str, n: usize) {
        let sent: i32 = one(&format!(
            "SELECT sqs_send({}, ARRAY(SELECT '{{\"n\":' || i || '}}' FROM generate_series(1, {n}) i))",
            quote(url)
        ));
        assert_eq!(sent as usize, n);
    }

    fn pulled(url: &str, n: i32) -> i64 {
        one(&format!(
            "SELECT count(*) FROM sqs_pull({}, {n})",
            quote(url)
        ))
    }

    #[pg_test]
    fn create_queue_is_idempotent() {
        let url = fresh_queue("t-create");
        let name = url.rsplit('/').next().unwrap().to_string();
        run(&format!(
            "SET LOCAL sqs_loader.endpoint = {}",
            quote(&localstack())
        ));
        assert_eq!(
            one::<String>(&format!("SELECT sqs_create_queue({})", quote(&name))),
            url
        );
        install_try_sql();
        assert!(try_sql("SELECT sqs_create_queue('bad name!')").starts_with("22023"));
    }

    #[pg_test]
    fn pull_counts() {
        let url = fresh_queue("t-pull");
        assert_eq!(pulled(&url, 10), 0, "empty queue");
        send_n(&url, 136);
        assert_eq!(pulled(&url, 1), 1);
        assert_eq!(pulled(&url, 10), 10);
        assert_eq!(pulled(&url, 25), 25);
        assert_eq!(pulled(&url, 100), 100);
        // Received messages are invisible for their visibility timeout: nothing left.
        assert_eq!(pulled(&url, 10), 0);
        let depth: i64 = one(&format!(
            "SELECT (sqs_queue_attributes({}) ->> 'ApproximateNumberOfMessagesNotVisible')::bigint",
            quote(&url)
        ));
        assert_eq!(depth, 136);
    }

    #[pg_test]
    fn visibility_timeout_brings_a_message_back_with_receive_count_2() {
        let url = fresh_queue("t-vis");
        send_n(&url, 1);
        let (id1, c1): (Option<String>, Option<i32>) = Spi::get_two(&format!(
            "SELECT message_id, receive_count FROM sqs_pull({}, 1, 1)",
            quote(&url)
        ))
        .unwrap();
        assert_eq!(c1, Some(1));
        // Not deleted: it comes back once its 1 s visibility timeout has passed.
        let mut again = (None, None);
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let rows: Vec<(Option<String>, Option<i32>)> = Spi::connect(|c| {
                c.select(
                    &format!(
                        "SELECT message_id, receive_count FROM sqs_pull({}, 1, 30)",
                        quote(&url)
                    ),
                    None,
                    &[],
                )
                .unwrap()
                .map(|r| (r.get::<String>(1).unwrap(), r.get::<i32>(2).unwrap()))
                .collect()
            });
            if let Some(r) = rows.into_iter().next() {
                again = r;
                break;
            }
        }
        let (id2, c2) = again;
        assert_eq!(id1, id2);
        assert_eq!(c2, Some(2));
    }

    #[pg_test]
    fn delete_with_one_bad_receipt_handle() {
        let url = fresh_queue("t-del");
        send_n(&url, 12);
        let deleted: i32 = one(&format!(
            "SELECT sqs_delete({0}, array_append(ARRAY(SELECT receipt_handle FROM sqs_pull({0}, 12)), 'not-a-receipt-handle'))",
            quote(&url)
        ));
        assert_eq!(deleted, 12);
        let attrs: pgrx::JsonB = one(&format!("SELECT sqs_queue_attributes({})", quote(&url)));
        assert_eq!(attrs.0["ApproximateNumberOfMessages"], 0);
        assert_eq!(attrs.0["ApproximateNumberOfMessagesNotVisible"], 0);
    }

    fn round_trip(protocol: &str) {
        run(&format!("SET LOCAL sqs_loader.protocol = '{protocol}'"));
        let url = fresh_queue(&format!("t-rt-{protocol}"));
        let big = "x".repeat(200 * 1024);
        let bodies = [
            r#"{"q":"double \"quotes\" and 'single'"}"#.to_string(),
            "<xml attr=\"1\">&amp; & < > </xml>".to_string(),
            "unicode: é 漢字 🙂 \u{2028} tab\tnewline\n\r\ncr".to_string(),
            "]]> <![CDATA[ x ]]>".to_string(),
            big.clone(),
        ];
        let arr = format!(
            "ARRAY[{}]",
            bodies
                .iter()
                .map(|b| quote(b))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(
            one::<i32>(&format!("SELECT sqs_send({}, {arr})", quote(&url))),
            bodies.len() as i32
        );
        let got: Vec<String> = Spi::connect(|c| {
            c.select(
                &format!("SELECT body FROM sqs_pull({}, 10)", quote(&url)),
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
        });
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want = bodies.to_vec();
        want.sort();
        assert_eq!(got_sorted.len(), want.len(), "{protocol}");
        for (g, w) in got_sorted.iter().zip(&want) {
            assert_eq!(g, w, "{protocol}: body changed in transit");
        }
    }

    #[pg_test]
    fn send_receive_round_trip_json() {
        round_trip("json");
    }

    #[pg_test]
    fn send_receive_round_trip_query() {
        round_trip("query");
    }

    #[pg_test]
    fn unknown_queue_and_unreachable_endpoint() {
        install_try_sql();
        run("SET LOCAL sqs_loader.aws_access_key_id = 'test'");
        run("SET LOCAL sqs_loader.aws_secret_access_key = 'test'");
        let ls = localstack();
        for protocol in ["json", "query"] {
            run(&format!("SET LOCAL sqs_loader.protocol = '{protocol}'"));
            let err = try_sql(&format!(
                "SELECT * FROM sqs_pull('{ls}/000000000000/no-such-queue-here', 1)"
            ));
            assert!(
                err.starts_with("42704") && err.contains("QueueDoesNotExist"),
                "{protocol}: {err}"
            );
        }
        // A closed port: a clear I/O error after the retries, no secret in it.
        run("SET LOCAL sqs_loader.max_retries = 1");
        let err = try_sql("SELECT * FROM sqs_pull('http://127.0.0.1:9/000000000000/q', 1)");
        assert!(
            err.starts_with("58030") && err.contains("2 attempt(s)"),
            "{err}"
        );
        // Hosts outside the allow-list are refused before any request.
        let err = try_sql("SELECT * FROM sqs_pull('http://169.254.169.254/000000000000/q', 1)");
        assert!(
            err.starts_with("42501") && err.contains("allowed_hosts"),
            "{err}"
        );
        // Arguments are validated.
        assert!(try_sql(&format!(
            "SELECT * FROM sqs_pull('{ls}/000000000000/q', -1)"
        ))
        .starts_with("22023"));
        assert!(try_sql(&format!(
            "SELECT * FROM sqs_pull('{ls}/000000000000/q', 1, NULL, 21)"
        ))
        .starts_with("22023"));
        assert!(try_sql("SELECT * FROM sqs_pull('not a url', 1)").starts_with("22023"));
        assert!(try_sql(&format!(
            "SELECT sqs_send('{ls}/000000000000/q', ARRAY[NULL])"
        ))
        .starts_with("22004"));
    }

    #[pg_test]
    fn a_granted_role_cannot_send_requests_to_other_hosts() {
        install_try_sql();
        let role = make_role("sqsuser");
        run(&format!(
            "GRANT EXECUTE ON FUNCTION sqs_pull(text, integer, integer, integer), sqs_queue_attributes(text) TO {role}"
        ));
        run(&format!("SET LOCAL ROLE {role}"));
        // Instance metadata, directly or through the endpoint override (a user setting): refused
        // before any request, because the allow-list applies to wherever the request would go.
        let err = try_sql("SELECT * FROM sqs_pull('http://169.254.169.254/000000000000/q', 1)");
        assert!(
            err.starts_with("42501") && err.contains("169.254.169.254"),
            "{err}"
        );
        // The endpoint override decides where requests go: the role cannot set it.
        let err = try_sql("SET sqs_loader.endpoint = 'http://169.254.169.254'");
        assert!(err.starts_with("42501"), "{err}");
        // The role can change neither the allow-list nor the credentials.
        assert!(try_sql("SET sqs_loader.allowed_hosts = '*'").starts_with("42501"));
        assert!(try_sql("SET sqs_loader.aws_access_key_id = 'x'").starts_with("42501"));
        run("RESET ROLE");
    }

    #[pg_test]
    fn loopback_is_not_allowed_by_default_nor_by_a_wildcard() {
        install_try_sql();
        // The built-in allow-list: AWS only.
        let builtin: String =
            one("SELECT boot_val FROM pg_settings WHERE name = 'sqs_loader.allowed_hosts'");
        assert_eq!(builtin, "*.amazonaws.com,*.amazonaws.com.cn");
        run("SELECT set_config('sqs_loader.allowed_hosts', (SELECT boot_val FROM pg_settings WHERE name = 'sqs_loader.allowed_hosts'), true)");
        // Credentials of their own, so that none are looked for elsewhere.
        run("SET LOCAL sqs_loader.aws_access_key_id = 'test'");
        run("SET LOCAL sqs_loader.aws_secret_access_key = 'test'");
        let err = try_sql(&format!(
            "SELECT * FROM sqs_pull('{}/000000000000/q', 1)",
            localstack()
        ));
        assert!(
            err.starts_with("42501") && err.contains("allowed_hosts"),
            "{err}"
        );
        // A wildcard allows public addresses only: the address connected to is checked, so an
        // allowed name resolving to loopback is refused too, with no request sent.
        run("SET LOCAL sqs_loader.allowed_hosts = '*'");
        for url in [
            localstack(),
            "http://localhost:4566".to_string(),
            "http://[::1]:4566".to_string(),
        ] {
            let err = try_sql(&format!(
                "SELECT * FROM sqs_pull('{url}/000000000000/q', 1)"
            ));
            assert!(
                err.starts_with("42501") && err.contains("not a public address"),
                "{url}: {err}"
            );
            assert!(
                !err.contains("attempt"),
                "refused at once, not retried: {err}"
            );
        }
        // Listed exactly by a superuser: allowed (the emulator answers).
        run("SET LOCAL sqs_loader.allowed_hosts = '*, 127.0.0.1'");
        let err = try_sql(&format!(
            "SELECT * FROM sqs_pull('{}/000000000000/no-such-q', 1)",
            localstack()
        ));
        assert!(err.starts_with("42704"), "{err}");
    }

    #[pg_test]
    fn text_arguments_are_data_never_sql() {
        let private = install_fresh_key();
        install_try_sql();
        let injections = [
            "x'); DROP TABLE user_logins; --",
            "'; SELECT pg_sleep(30); --",
            "$$ || (SELECT secret FROM sqs_loader.token_key) || $$",
            "\\'; DROP SCHEMA sqs_loader CASCADE; --",
        ];
        for inj in injections {
            let q = quote(inj);
            assert!(
                try_sql(&format!(
                    "SELECT * FROM sqs_pull('http://localhost:4566/000000000000/' || {q}, 1)"
                ))
                .starts_with("22023"),
                "{inj}"
            );
            assert!(
                try_sql(&format!("SELECT sqs_create_queue({q})")).starts_with("22023"),
                "{inj}"
            );
            assert_eq!(
                opt::<String>(&format!("SELECT unmask_pii({q}, {})", quote(&private))),
                None
            );
            assert_eq!(
                one::<String>(&format!(
                    "SELECT token FROM sqs_loader.unmask_audit WHERE token = {q} LIMIT 1"
                )),
                inj,
                "audited verbatim"
            );
            assert!(!one::<bool>(&format!("SELECT forget_pii({q})")));
            assert_eq!(one::<String>(&format!("SELECT mask_pii({q})")).len(), 46);
            let body = serde_json::json!({"user_id": inj, "ip": "1.2.3.4", "device_id": inj, "app_version": "1"}).to_string();
            assert_eq!(
                one::<String>(&format!(
                    "SELECT user_id FROM sqs_loader.parse_login({})",
                    quote(&body)
                )),
                inj
            );
        }
        assert!(one::<bool>("SELECT to_regclass('public.user_logins') IS NOT NULL AND to_regclass('sqs_loader.vault') IS NOT NULL"));
    }
}

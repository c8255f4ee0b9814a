//! docker/ is not run by CI (no Docker engine): check that the compose file parses and names the
//! right images, ports and init scripts, and that the Dockerfile builds with the CI's make target.

use sqs_loader_it::env;
use yaml_rust2::{Yaml, YamlLoader};

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{}/{rel}", env().root))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn strs(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn compose_file_names_the_right_images_ports_and_init_scripts() {
    let doc =
        &YamlLoader::load_from_str(&read("docker/docker-compose.yml")).expect("valid YAML")[0];
    let services = &doc["services"];
    let ls = &services["localstack"];
    // The same LocalStack version the tests run on the host.
    assert_eq!(ls["image"].as_str(), Some("localstack/localstack:4.13.1"));
    assert!(read("scripts/deps.sh").contains("localstack-core[runtime]==4.13.1"));
    assert_eq!(
        strs(&ls["ports"]),
        vec!["127.0.0.1:4566:4566"],
        "loopback only"
    );
    assert_eq!(ls["environment"]["SERVICES"].as_str(), Some("sqs,sns"));
    let volumes = strs(&ls["volumes"]);
    assert!(volumes.contains(
        &"./localstack/init-login-queue.sh:/etc/localstack/init/ready.d/init-login-queue.sh:ro"
            .into()
    ));
    assert!(volumes.contains(
        &"../data/sample_login_messages.jsonl:/data/sample_login_messages.jsonl:ro".into()
    ));
    let init = read("docker/localstack/init-login-queue.sh");
    assert!(
        init.contains("create-queue --queue-name login-queue")
            && init.contains("/data/sample_login_messages.jsonl")
    );

    let pg = &services["postgres"];
    assert_eq!(
        pg["build"]["dockerfile"].as_str(),
        Some("docker/Dockerfile")
    );
    assert_eq!(pg["build"]["context"].as_str(), Some(".."));
    assert_eq!(
        strs(&pg["ports"]),
        vec!["127.0.0.1:5432:5432"],
        "loopback only"
    );
    assert_eq!(
        pg["depends_on"]["localstack"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert!(strs(&pg["volumes"]).contains(&"../keys/public_key.pem:/keys/public_key.pem:ro".into()));

    // Every file the compose file mounts exists (paths relative to docker/).
    for v in strs(&ls["volumes"])
        .iter()
        .chain(strs(&pg["volumes"]).iter())
    {
        let src = v.split(':').next().unwrap();
        if !src.contains("keys/") {
            assert!(
                std::path::Path::new(&format!("{}/docker/{src}", env().root)).exists(),
                "{src}"
            );
        }
    }
}

#[test]
fn dockerfile_builds_with_the_ci_make_target_and_installs_the_init_sql() {
    let d = read("docker/Dockerfile");
    assert!(
        d.contains("RUN make install"),
        "the same Makefile target CI runs"
    );
    assert!(read("Makefile").contains("\ninstall: deps"));
    // The major is a build argument, 15 by default, used for the image, pg_cron and pg_config.
    assert!(d.contains("ARG PG_MAJOR=15"));
    assert!(
        d.contains("FROM postgres:${PG_MAJOR}-bookworm")
            && d.contains("postgresql-${PG_MAJOR}-cron")
    );
    assert!(d.contains("make install PG_CONFIG=/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"));
    assert!(d.contains("COPY docker/initdb/ /docker-entrypoint-initdb.d/"));
    assert!(d.contains("shared_preload_libraries=pg_cron,sqs_loader"));
    let init = read("docker/initdb/10-sqs_loader.sql");
    for needle in [
        "CREATE EXTENSION sqs_loader",
        "sqs_loader.queue_url = 'http://localstack:4566/000000000000/login-queue'",
        "set_rsa_public_key",
        "cron.schedule('load-user-logins', '* * * * *', 'CALL load_user_logins()')",
    ] {
        assert!(init.contains(needle), "{needle}");
    }
}

//! The docs are true: every ```sql block of README.md and docs/*.md is executed against a fresh
//! database with the extension (and a queue in sqs_loader.queue_url), unless the line before it
//! says `<!-- not run ... -->`; the settings table of docs/reference.md is pg_settings.

use sqs_loader_it::*;

fn sql_blocks(rel: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(format!("{}/{rel}", env().root)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```sql" {
            let skip = i > 0 && lines[i - 1].trim().starts_with("<!-- not run");
            let start = i + 1;
            let mut j = start;
            while lines[j].trim() != "```" {
                j += 1;
            }
            if !skip {
                out.push((start, lines[start..j].join("\n")));
            }
            i = j;
        }
        i += 1;
    }
    out
}

#[test]
fn every_sql_example_in_the_docs_runs() {
    let _g = shared();
    let e = env();
    let mut admin = connect("postgres");
    // The roles the examples grant to.
    for role in [
        "analyst",
        "auditor",
        "privacy_officer",
        "sqs_operator",
        "security_officer",
    ] {
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role}; END IF; END $$"
            ))
            .unwrap();
    }
    let mut ran = 0;
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(format!("{}/docs", e.root))
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".md"))
        .map(|f| format!("docs/{f}"))
        .collect();
    docs.sort();
    files.extend(docs);
    for file in &files {
        for (line, sql) in sql_blocks(file) {
            // pg_cron lives in the database named by cron.database_name.
            let cron = sql.contains("cron.");
            let db = if cron {
                None
            } else {
                Some(TestDb::new("docs"))
            };
            let dbname = db
                .as_ref()
                .map(|d| d.name.clone())
                .unwrap_or_else(|| e.cron_db.clone());
            let mut c = connect(&dbname);
            c.batch_execute("CREATE EXTENSION IF NOT EXISTS sqs_loader")
                .unwrap();
            let url = create_queue(&mut c, "it-docs");
            c.execute(
                "SELECT set_config('sqs_loader.queue_url', $1, false)",
                &[&url],
            )
            .unwrap();
            // Leftovers of a failed earlier run of an example that creates a role.
            admin
                .batch_execute("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst_example') THEN DROP ROLE analyst_example; END IF; END $$")
                .ok();
            let result = c.batch_execute(&sql);
            if cron {
                c.batch_execute(
                    "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'load-user-logins';
                     ALTER DATABASE postgres RESET sqs_loader.queue_url; ALTER DATABASE postgres RESET sqs_loader.exit_when_empty;",
                )
                .unwrap();
            }
            if let Err(err) = result {
                panic!("{file}:{line}: the example fails: {err:?}\n{sql}");
            }
            ran += 1;
        }
    }
    assert!(ran >= 5, "{ran} examples ran");
}

/// The settings table of docs/reference.md (its "## Settings" section): one row per setting.
fn documented_settings() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{}/docs/reference.md", env().root)).unwrap();
    text.lines()
        .skip_while(|l| !l.starts_with("## Settings"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells
                .get(1)?
                .strip_prefix("`sqs_loader.")?
                .strip_suffix('`')?;
            let default = cells.get(2)?;
            let default = default.trim_matches('`');
            Some((
                format!("sqs_loader.{name}"),
                if default == "(empty)" {
                    String::new()
                } else {
                    default.to_string()
                },
            ))
        })
        .collect()
}

#[test]
fn the_settings_table_is_what_pg_settings_says() {
    let _g = shared();
    let mut c = connect("postgres");
    // Every setting the server knows, with its built-in default (hidden ones included).
    let known: Vec<(String, String)> = c
        .query(
            "SELECT name, coalesce(boot_val, '') FROM pg_settings WHERE name LIKE 'sqs_loader.%'
             UNION ALL
             SELECT n, '' FROM unnest(ARRAY['sqs_loader.aws_access_key_id', 'sqs_loader.aws_secret_access_key',
                                            'sqs_loader.aws_session_token', 'sqs_loader.proxy']) n
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut documented = documented_settings();
    documented.sort();
    assert_eq!(
        documented, known,
        "docs/reference.md's settings table vs pg_settings"
    );
}

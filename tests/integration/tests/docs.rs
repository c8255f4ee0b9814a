//! The SQL examples of README.md and docs/production.md run: every ```sql block is executed
//! against a fresh database with the extension (and a queue in sqs_loader.queue_url), unless
//! the line before it says `<!-- not run ... -->`.

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
    for role in ["analyst", "auditor", "privacy_officer", "sqs_operator"] {
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role}; END IF; END $$"
            ))
            .unwrap();
    }
    let mut ran = 0;
    for file in ["README.md", "docs/production.md"] {
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
    assert!(ran >= 4, "{ran} examples ran");
}

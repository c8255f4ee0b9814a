//! sqs_loader_unmask: recover values masked by sqs_loader without the private key ever reaching
//! the database server. It fetches, for each token, the sealed value and its RSA-wrapped data
//! key (`sealed_values()`, which audits every token as exported), and decrypts them here.
//!
//! Output: CSV `token,value,outcome` on stdout, one row per token asked for (in the order asked,
//! duplicates once), outcome one of ok, erased, unknown_token, wrong_key, corrupt.

#[path = "../../../src/hex.rs"]
#[allow(dead_code)] // mask.rs's hex encoder
mod hex;
#[path = "../../../src/mask.rs"]
#[allow(dead_code)] // the extension uses more of it than this tool does
mod mask;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;

const USAGE: &str = "\
sqs_loader_unmask: recover sqs_loader's masked values offline (the private key stays here)

usage:
  sqs_loader_unmask --db CONNINFO --key PRIVATE_KEY.pem [--passphrase-file FILE] TOKEN...
  sqs_loader_unmask --db CONNINFO --key PRIVATE_KEY.pem [...] -          tokens on stdin, one per line
  sqs_loader_unmask --db CONNINFO --key PRIVATE_KEY.pem [...] --csv FILE --column NAME

  CONNINFO   a libpq connection string: 'host=db.internal dbname=app user=auditor sslmode=require'
             or postgresql://auditor@db.internal/app?sslmode=require (TLS certificates are
             verified against the system's trust store). The role must be a member of
             sqs_loader_unmask.
  --key      RSA private key, PEM: PKCS#8, PKCS#1, or encrypted PKCS#8 (the passphrase is read
             from --passphrase-file, else asked for on the terminal).

Prints CSV token,value,outcome (ok, erased, unknown_token, wrong_key, corrupt) on stdout.
Exit status: 0 when every token was looked up, 1 on an error (connection, key, input), 2 on usage.";

#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    db: String,
    key: String,
    passphrase_file: Option<String>,
    tokens: Vec<String>,
    stdin: bool,
    csv: Option<(String, String)>,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut csv_file = None;
    let mut column = None;
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--db" => a.db = value("--db")?,
            "--key" => a.key = value("--key")?,
            "--passphrase-file" => a.passphrase_file = Some(value("--passphrase-file")?),
            "--csv" => csv_file = Some(value("--csv")?),
            "--column" => column = Some(value("--column")?),
            "-" => a.stdin = true,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            token => a.tokens.push(token.to_string()),
        }
    }
    if a.db.is_empty() || a.key.is_empty() {
        return Err("--db and --key are required".into());
    }
    match (csv_file, column) {
        (Some(f), Some(c)) => a.csv = Some((f, c)),
        (None, None) => {}
        _ => return Err("--csv and --column go together".into()),
    }
    let sources = [!a.tokens.is_empty(), a.stdin, a.csv.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err("give tokens as arguments, or - for stdin, or --csv FILE --column NAME".into());
    }
    Ok(a)
}

/// Tokens from a CSV file's column (header row names the columns).
fn tokens_from_csv(file: &str, column: &str) -> Result<Vec<String>, String> {
    let mut r = csv::Reader::from_path(file).map_err(|e| format!("{file}: {e}"))?;
    let idx = r
        .headers()
        .map_err(|e| format!("{file}: {e}"))?
        .iter()
        .position(|h| h == column)
        .ok_or_else(|| format!("{file} has no column {column}"))?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| format!("{file}: {e}"))?;
        if let Some(t) = rec.get(idx).map(str::trim).filter(|t| !t.is_empty()) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// Distinct tokens in the order first given.
fn distinct(tokens: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    tokens
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

fn read_passphrase(file: &Option<String>) -> Result<String, String> {
    match file {
        Some(f) => std::fs::read_to_string(f)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("{f}: {e}")),
        None => rpassword::prompt_password("passphrase of the private key: ")
            .map_err(|e| format!("cannot read the passphrase from the terminal: {e}")),
    }
}

/// What the database returned for one token.
struct Sealed {
    outcome: String,
    sealed: Option<Vec<u8>>,
    wrapped_key: Option<Vec<u8>>,
}

/// Decrypt one token's value; data keys are unwrapped once each (many tokens share one).
fn recover(
    private: &rsa::PrivateKey,
    cache: &mut HashMap<Vec<u8>, Result<[u8; 32], mask::MaskError>>,
    token: &str,
    s: &Sealed,
) -> (Option<String>, String) {
    let (Some(sealed), Some(wrapped)) = (&s.sealed, &s.wrapped_key) else {
        return (None, s.outcome.clone());
    };
    let dk = cache
        .entry(wrapped.clone())
        .or_insert_with(|| mask::unwrap(private, wrapped));
    match dk {
        Err(mask::MaskError::WrongKey) => (None, "wrong_key".into()),
        Err(_) => (None, "corrupt".into()),
        Ok(dk) => match mask::open(dk, token, sealed).map(String::from_utf8) {
            Ok(Ok(v)) => (Some(v), "ok".into()),
            _ => (None, "corrupt".into()),
        },
    }
}

fn connect(conninfo: &str) -> Result<postgres::Client, String> {
    let config: postgres::Config = conninfo
        .parse()
        .map_err(|e| format!("bad connection string: {e}"))?;
    let tls = native_tls::TlsConnector::new().map_err(|e| format!("TLS: {e}"))?;
    config
        .connect(postgres_native_tls::MakeTlsConnector::new(tls))
        .map_err(|e| format!("cannot connect: {e}"))
}

fn run(a: Args) -> Result<(), String> {
    let pem = std::fs::read_to_string(&a.key).map_err(|e| format!("{}: {e}", a.key))?;
    let passphrase = if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        Some(read_passphrase(&a.passphrase_file)?)
    } else {
        None
    };
    let private =
        mask::parse_private_key(&pem, passphrase.as_deref()).map_err(|e| e.to_string())?;
    let tokens = distinct(if a.stdin {
        std::io::stdin()
            .lock()
            .lines()
            .map(|l| l.map(|l| l.trim().to_string()))
            .filter(|l| !matches!(l, Ok(s) if s.is_empty()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("stdin: {e}"))?
    } else if let Some((file, column)) = &a.csv {
        tokens_from_csv(file, column)?
    } else {
        a.tokens
    });
    let mut client = connect(&a.db)?;
    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
    out.write_record(["token", "value", "outcome"])
        .map_err(|e| e.to_string())?;
    let mut cache = HashMap::new();
    for chunk in tokens.chunks(1000) {
        let rows = client
            .query(
                "SELECT token, outcome, sealed, wrapped_key FROM sealed_values($1)",
                &[&chunk],
            )
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            })?;
        let got: HashMap<String, Sealed> = rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Sealed {
                        outcome: r.get(1),
                        sealed: r.get(2),
                        wrapped_key: r.get(3),
                    },
                )
            })
            .collect();
        for t in chunk {
            let (value, outcome) = match got.get(t) {
                Some(s) => recover(&private, &mut cache, t, s),
                None => (None, "unknown_token".into()),
            };
            out.write_record([t.as_str(), value.as_deref().unwrap_or(""), outcome.as_str()])
                .map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("sqs_loader_unmask: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "sqs_loader_unmask: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests;

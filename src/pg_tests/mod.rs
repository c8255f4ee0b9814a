//! `#[pg_test]`s: run inside pgrx's test PostgreSQL, each in a transaction that is rolled back.
//! The SQS tests talk to LocalStack at `sqs_loader_test.localstack` (set in `crate::pg_test` and
//! started by `make test`). Tests that need COMMIT (the procedure, pg_cron, kills) are client-side
//! tests in tests/integration/. Each file holds one `#[pg_schema] mod tests` (pgrx puts the test
//! functions in schema `tests`); the helpers below are shared.

mod catalog;
mod masking;
mod privileges;
mod sqs;

use pgrx::prelude::*;
pub use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

pub fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: NULL"))
}

pub fn opt<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn quote(s: &str) -> String {
    pgrx::spi::quote_literal(s)
}

/// A helper schema with try_sql(q): 'ok', or 'SQLSTATE: message' when q fails (in a subtransaction).
/// Every role may call it, so it can probe what an unprivileged role is refused.
pub fn install_try_sql() {
    run("CREATE SCHEMA IF NOT EXISTS t_help");
    run("GRANT USAGE ON SCHEMA t_help TO PUBLIC");
    run(
        "CREATE OR REPLACE FUNCTION t_help.try_sql(q text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN EXECUTE q; RETURN 'ok';
         EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$",
    );
}

pub fn try_sql(sql: &str) -> String {
    one::<String>(&format!("SELECT t_help.try_sql({})", quote(sql)))
}

/// A role that exists only in this test's transaction.
pub fn make_role(name: &str) -> String {
    let role = format!(
        "{name}_{}",
        std::process::id() ^ (getrandom::u32().unwrap() & 0xffff)
    );
    run(&format!("CREATE ROLE {role} NOLOGIN"));
    role
}

pub fn keypair(bits: usize) -> (String, String) {
    let k = rsa::PrivateKey::new(&mut getrandom::SysRng, bits).unwrap();
    let private = k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public = k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    (private, public)
}

/// Mask a value the way the loader does (stored in the vault); its token.
pub fn store(value: &str) -> String {
    one(&format!(
        "SELECT (sqs_loader.mask_values(ARRAY[{}]))[1]",
        quote(value)
    ))
}

/// The statement that unmasks `token` with the private key PEM `key`.
pub fn unmask_sql(token: &str, key: &str) -> String {
    format!("SELECT unmask_pii({}, {})", quote(token), quote(key))
}

/// Unmask `token` with the private key PEM `key` (None for an erased value).
pub fn unmask(token: &str, key: &str) -> Option<String> {
    opt(&unmask_sql(token, key))
}

/// Install a fresh RSA public key; return the private key PEM.
pub fn install_fresh_key() -> String {
    let (private, public) = keypair(2048);
    run(&format!("SELECT set_rsa_public_key({})", quote(&public)));
    private
}

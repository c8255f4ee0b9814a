//! `app_version` packing both ways.

use crate::login;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// "major[.minor[.patch]]" → major × 1,000,000 + minor × 1,000 + patch.
#[pg_extern(immutable, strict, parallel_safe)]
fn app_version_int(version: &str) -> Result<i32, ErrorReport> {
    login::app_version_to_int(version).map_err(|r| {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            r.detail,
            "sqs_loader",
        )
        .set_hint(format!("reason: {}", r.reason))
    })
}

/// The canonical "major.minor.patch" of a packed app_version.
#[pg_extern(immutable, strict, parallel_safe)]
fn app_version_text(version: i32) -> Result<String, ErrorReport> {
    login::app_version_text(version).ok_or_else(|| {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!("{version} is not a packed app_version (0 to 2146999999)"),
            "sqs_loader",
        )
    })
}

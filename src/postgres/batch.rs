//! A batch's claim on its message ids, what makes loading exactly once: one INSERT into
//! processed_messages (`sqs_loader.claim_messages()`), in the caller's transaction (the
//! one that inserts the rows). A message id already there was loaded or rejected before (its
//! delete was lost, or SQS delivered it again): it is skipped.

use super::error::Error;
use super::plans;
use crate::login::{Parsed, Rejection};
use pgrx::prelude::*;

/// Claim the ids of `msgs` (distinct and sorted: concurrent loaders lock them in the same
/// order) for run `run_id` (NULL outside a run): whether each was claimed by this call.
pub fn claim(
    run_id: Option<i64>,
    msgs: &[(String, Option<TimestampWithTimeZone>, Option<String>)],
    parsed: &[Result<Parsed, Rejection>],
) -> Result<Vec<bool>, Error> {
    let ids: Vec<&str> = msgs.iter().map(|m| m.0.as_str()).collect();
    let ok: Vec<bool> = parsed.iter().map(Result::is_ok).collect();
    let sent: Vec<Option<TimestampWithTimeZone>> = msgs.iter().map(|m| m.1).collect();
    let mut claimed = vec![false; msgs.len()];
    if msgs.is_empty() {
        return Ok(claimed);
    }
    // sqs_loader.claim_messages() (sql/20_loader.sql): a plain INSERT, or ON CONFLICT DO
    // NOTHING when an id is recorded already.
    let got: Option<Vec<Option<String>>> = Spi::connect_mut(|client| {
        plans::update(
            client,
            "SELECT sqs_loader.claim_messages($1, $2, $3, $4)",
            Some(1),
            &[run_id.into(), ids.into(), ok.into(), sent.into()],
        )?
        .first()
        .get(1)
    })
    .map_err(|e| Error::Internal(format!("claiming the batch's message ids: {e}")))?;
    for id in got.unwrap_or_default().into_iter().flatten() {
        if let Ok(i) = msgs.binary_search_by(|m| m.0.as_str().cmp(&id)) {
            claimed[i] = true;
        }
    }
    Ok(claimed)
}

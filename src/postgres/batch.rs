//! A batch's claim on its message ids, what makes loading exactly once: one
//! `INSERT … ON CONFLICT DO NOTHING` into processed_messages, in the caller's transaction (the
//! one that inserts the rows). A message id already there was loaded or rejected before (its
//! delete was lost, or SQS delivered it again): it is skipped.

use super::error::Error;
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
    Spi::connect_mut(|client| {
        let rows = client.update(
            "INSERT INTO sqs_loader.processed_messages (message_id, outcome, run_id, sent_at)
             SELECT u.id, CASE WHEN u.ok THEN 'loaded' ELSE 'rejected' END, $2, u.sent
               FROM unnest($1::text[], $3::boolean[], $4::timestamptz[]) AS u(id, ok, sent)
             ON CONFLICT (message_id) DO NOTHING
             RETURNING message_id",
            None,
            &[ids.into(), run_id.into(), ok.into(), sent.into()],
        )?;
        for row in rows {
            let id: Option<String> = row.get(1)?;
            if let Some(i) = id.and_then(|id| msgs.binary_search_by(|m| m.0.as_str().cmp(&id)).ok())
            {
                claimed[i] = true;
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(|e| Error::Internal(format!("claiming the batch's message ids: {e}")))?;
    Ok(claimed)
}

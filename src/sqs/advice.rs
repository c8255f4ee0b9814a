//! What to change, for the AWS errors that come from a misconfiguration rather than a bad request:
//! a KMS-encrypted queue the role may not use, a request signed for the wrong region (a VPC
//! endpoint host, an endpoint override), a queue URL of another region, a legacy
//! `queue.amazonaws.com` URL. Plain Rust; the error's hint in SQL.

use super::endpoint::{region_from_host, Endpoint};
use super::Action;

/// Advice for an AWS error `code` (normalised) with `message`, for a request to `endpoint`
/// about `queue_url` (when the request names a queue); None when the code says it all.
pub fn for_error(
    action: Action,
    code: &str,
    message: &str,
    endpoint: &Endpoint,
    queue_url: Option<&str>,
) -> Option<String> {
    let queue_host = queue_url.and_then(host_of);
    let queue_region = queue_host.as_deref().and_then(region_from_host);
    let legacy = |h: &str| h == "queue.amazonaws.com" || h.ends_with(".queue.amazonaws.com");
    if let Some(kms) = kms(action, code) {
        return Some(kms);
    }
    match code {
        "SignatureDoesNotMatch" | "InvalidSignatureException" | "AuthorizationHeaderMalformed"
            if message.contains("region") || message.contains("scoped") =>
        {
            let from = if endpoint.host.starts_with("vpce-") || endpoint.host.contains(".vpce.") {
                format!("the VPC endpoint host {}", endpoint.host)
            } else {
                format!("the host {}", endpoint.host)
            };
            Some(match queue_region.filter(|r| *r != endpoint.region) {
                Some(r) => format!(
                    "Requests to {from} were signed for region {}, but the queue is in {r}: SET sqs_loader.region = '{r}' (a VPC endpoint is signed for its own region).",
                    endpoint.region
                ),
                None => format!(
                    "Requests to {from} were signed for region {}: set sqs_loader.region to the queue's region (a VPC endpoint is signed for the region it is in).",
                    endpoint.region
                ),
            })
        }
        "InvalidAddress" | "QueueDoesNotExist" | "InvalidParameterValue" => {
            if let Some(h) = queue_host.as_deref().filter(|h| legacy(h)) {
                let region = region_from_host(h).unwrap_or_else(|| "us-east-1".into());
                let path = queue_url.and_then(path_of).unwrap_or_default();
                return Some(format!(
                    "{h} is a legacy SQS host name: use the queue's current URL, https://sqs.{region}.amazonaws.com{path} (the same queue)."
                ));
            }
            match queue_region {
                Some(r) if r != endpoint.region => Some(format!(
                    "The queue URL is in {r}, but requests go to {} ({}): unset sqs_loader.endpoint or point it at an endpoint of {r}.",
                    endpoint.base, endpoint.region
                )),
                _ if code == "QueueDoesNotExist" => Some(
                    "Create it with sqs_create_queue(name), or check the queue URL and its region.".into(),
                ),
                _ => None,
            }
        }
        "UnknownOperationException" | "InvalidAction" | "UnsupportedProtocol"
            if legacy(&endpoint.host) =>
        {
            Some(format!(
                "{} is a legacy SQS host name that does not take every protocol: use https://sqs.{}.amazonaws.com (or SET sqs_loader.protocol = 'query').",
                endpoint.host, endpoint.region
            ))
        }
        _ => None,
    }
}

fn kms(action: Action, code: &str) -> Option<String> {
    let needs = match action {
        Action::SendMessageBatch => "kms:GenerateDataKey and kms:Decrypt",
        _ => "kms:Decrypt",
    };
    Some(match code {
        "KmsAccessDenied" => format!(
            "The queue is encrypted with a customer-managed KMS key (SSE-KMS): allow the loader's role {needs} on that key, in the role's policy and the key policy."
        ),
        "KmsDisabled" => "The queue's KMS key is disabled: enable it, or change the queue's KmsMasterKeyId.".into(),
        "KmsNotFound" => "The queue's KMS key does not exist (deleted, or another account's key without access): change the queue's KmsMasterKeyId.".into(),
        "KmsInvalidState" => "The queue's KMS key is not usable (pending deletion or import): cancel the deletion or change the queue's KmsMasterKeyId.".into(),
        "KmsInvalidKeyUsage" => "The queue's KMS key is not a symmetric ENCRYPT_DECRYPT key: give the queue one that is.".into(),
        "KmsOptInRequired" => "The queue's KMS key needs an opt-in of this account to its service: see the KMS console.".into(),
        _ => return None,
    })
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', ':', '?']).next()?;
    Some(host.to_ascii_lowercase())
}

fn path_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    rest.find('/').map(|i| rest[i..].to_string())
}

#[cfg(test)]
#[path = "advice_tests.rs"]
mod tests;

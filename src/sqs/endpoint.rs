//! Where a request goes: endpoint, region and host allow-list, derived from a queue URL.

use super::SqsError;

/// Which addresses a request may connect to, once its host name is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Public addresses only: not loopback, private, link-local, unique-local, shared (CGNAT),
    /// unspecified or multicast. What a wildcard entry of the allow-list gives.
    PublicOnly,
    /// Any address: a host a superuser listed exactly (an emulator on localhost, a VPC
    /// endpoint's private address).
    Any,
}

/// The endpoint a request is sent to and the region it is signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    /// Lower-cased host name or address, without port or brackets.
    pub host: String,
    pub region: String,
    pub https: bool,
    /// Where the host may resolve to ([`host_allowed`] decides; public only until it did).
    pub addresses: AddressPolicy,
    /// The HTTP CONNECT proxy requests go through (`sqs_loader.proxy`; none by default).
    pub proxy: Option<ureq::Proxy>,
}

/// The pieces of an `http(s)://host[:port]/path` URL we care about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlParts {
    https: bool,
    authority: String,
    host: String,
    path: String,
}

fn parse_url(url: &str, what: &str) -> Result<UrlParts, SqsError> {
    let bad = |why: &str| SqsError::InvalidArgument(format!("invalid {what} \"{url}\": {why}"));
    let uri: http::Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information is not allowed in the URL"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(UrlParts {
        https,
        authority: authority.as_str().to_ascii_lowercase(),
        host,
        path: uri.path().to_string(),
    })
}

/// True for names shaped like AWS regions: `us-east-1`, `us-gov-west-1`, `ap-southeast-2`, `cn-north-1`.
pub fn is_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && {
            let last = parts[parts.len() - 1];
            !last.is_empty() && last.len() <= 2 && last.bytes().all(|b| b.is_ascii_digit())
        }
}

/// The region an AWS SQS host name names, if it is one:
/// `sqs.eu-west-1.amazonaws.com`, `sqs-fips.us-east-1.amazonaws.com`, `eu-west-1.queue.amazonaws.com`,
/// `queue.amazonaws.com` (us-east-1), `vpce-…​.sqs.us-east-1.vpce.amazonaws.com`, `sqs.cn-north-1.amazonaws.com.cn`.
pub fn region_from_host(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    if !(host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")) {
        return None;
    }
    if host == "queue.amazonaws.com" {
        return Some("us-east-1".into());
    }
    host.split('.').find(|l| is_region(l)).map(str::to_string)
}

/// Resolve the endpoint for a queue URL. `endpoint_override` (the `sqs_loader.endpoint` setting) wins
/// over the URL's own scheme and host; the region comes from the AWS host name when it names one,
/// otherwise from `default_region` (the `sqs_loader.region` setting).
pub fn for_queue_url(
    queue_url: &str,
    endpoint_override: Option<&str>,
    default_region: &str,
) -> Result<Endpoint, SqsError> {
    let q = parse_url(queue_url, "queue URL")?;
    let segments: Vec<&str> = q.path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() != 2 {
        return Err(SqsError::InvalidArgument(format!(
            "invalid queue URL \"{queue_url}\": expected http(s)://host/<account>/<queue-name>"
        )));
    }
    let base = match endpoint_override {
        Some(e) => parse_url(e, "endpoint (sqs_loader.endpoint)")?,
        None => q,
    };
    Ok(from_parts(base, default_region))
}

/// The endpoint for calls that have no queue URL (CreateQueue): the override, else the host of
/// `fallback_url` (e.g. `sqs_loader.queue_url`), else AWS's regional endpoint.
pub fn for_service(
    endpoint_override: Option<&str>,
    fallback_url: Option<&str>,
    default_region: &str,
) -> Result<Endpoint, SqsError> {
    if let Some(e) = endpoint_override {
        return Ok(from_parts(
            parse_url(e, "endpoint (sqs_loader.endpoint)")?,
            default_region,
        ));
    }
    if let Some(u) = fallback_url {
        return Ok(from_parts(
            parse_url(u, "queue URL (sqs_loader.queue_url)")?,
            default_region,
        ));
    }
    let url = format!("https://sqs.{default_region}.amazonaws.com");
    Ok(from_parts(parse_url(&url, "endpoint")?, default_region))
}

fn from_parts(p: UrlParts, default_region: &str) -> Endpoint {
    let region = region_from_host(&p.host).unwrap_or_else(|| default_region.to_string());
    let scheme = if p.https { "https" } else { "http" };
    Endpoint {
        base: format!("{scheme}://{}", p.authority),
        host: p.host,
        region,
        https: p.https,
        addresses: AddressPolicy::PublicOnly,
        proxy: None,
    }
}

/// Check `host` against a comma-separated allow-list (the `sqs_loader.allowed_hosts` setting):
/// None when no entry allows it; else where it may resolve to. Entries are exact host names or
/// addresses (any address: a superuser named this host), or `*.suffix` for any subdomain of
/// suffix, or `*` for every host (public addresses only).
pub fn host_allowed(host: &str, allow_list: &str) -> Option<AddressPolicy> {
    let host = host.to_ascii_lowercase();
    let mut allowed = None;
    for entry in allow_list
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
    {
        if entry == "*" {
            allowed.get_or_insert(AddressPolicy::PublicOnly);
        } else if let Some(suffix) = entry.strip_prefix("*.") {
            if host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            {
                allowed.get_or_insert(AddressPolicy::PublicOnly);
            }
        } else if host == entry.trim_start_matches('[').trim_end_matches(']') {
            return Some(AddressPolicy::Any);
        }
    }
    allowed
}

/// Whether an address is on the public internet: what a host allowed by a wildcard entry may
/// resolve to. (IPv4-mapped IPv6 addresses are judged as the IPv4 address they are.)
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_queue_url() {
        let e = for_queue_url(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/login-queue",
            None,
            "us-east-1",
        )
        .unwrap();
        assert_eq!(e.base, "https://sqs.eu-west-1.amazonaws.com");
        assert_eq!(e.region, "eu-west-1");
        assert!(e.https);
    }

    #[test]
    fn localstack_queue_url_uses_default_region() {
        let e = for_queue_url(
            "http://localhost:4566/000000000000/login-queue",
            None,
            "us-east-1",
        )
        .unwrap();
        assert_eq!(e.base, "http://localhost:4566");
        assert_eq!(e.host, "localhost");
        assert_eq!(e.region, "us-east-1");
        assert!(!e.https);
        let e = for_queue_url(
            "http://localhost:4566/000000000000/login-queue",
            None,
            "eu-central-1",
        )
        .unwrap();
        assert_eq!(e.region, "eu-central-1");
    }

    #[test]
    fn override_wins_but_region_follows_it() {
        let e = for_queue_url(
            "https://sqs.us-east-1.amazonaws.com/1/q",
            Some("http://127.0.0.1:4566"),
            "ap-south-1",
        )
        .unwrap();
        assert_eq!(e.base, "http://127.0.0.1:4566");
        assert_eq!(e.region, "ap-south-1");
    }

    #[test]
    fn region_from_all_aws_host_shapes() {
        for (host, region) in [
            ("sqs.us-west-2.amazonaws.com", Some("us-west-2")),
            (
                "sqs-fips.us-gov-west-1.amazonaws.com",
                Some("us-gov-west-1"),
            ),
            ("eu-west-3.queue.amazonaws.com", Some("eu-west-3")),
            ("queue.amazonaws.com", Some("us-east-1")),
            (
                "vpce-0a1b.sqs.ap-southeast-2.vpce.amazonaws.com",
                Some("ap-southeast-2"),
            ),
            ("sqs.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            ("localhost", None),
            ("sqs.us-east-1.amazonaws.com.evil.example", None),
        ] {
            assert_eq!(region_from_host(host).as_deref(), region, "{host}");
        }
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "ftp://x/1/q",
            "not a url",
            "http://localhost:4566/login-queue",
            "http://localhost:4566/a/b/c",
            "http://user:pw@localhost:4566/000000000000/q",
            "/000000000000/q",
        ] {
            let err = for_queue_url(url, None, "us-east-1").unwrap_err();
            assert!(
                matches!(err, SqsError::InvalidArgument(_)),
                "{url}: {err:?}"
            );
        }
    }

    #[test]
    fn ipv6_host() {
        let e = for_queue_url("http://[::1]:4566/000000000000/q", None, "us-east-1").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.base, "http://[::1]:4566");
        assert_eq!(
            host_allowed(&e.host, "localhost,::1"),
            Some(AddressPolicy::Any)
        );
    }

    #[test]
    fn allow_list() {
        use AddressPolicy::*;
        let list = "*.amazonaws.com, localhost,127.0.0.1";
        assert_eq!(
            host_allowed("sqs.us-east-1.amazonaws.com", list),
            Some(PublicOnly)
        );
        assert_eq!(
            host_allowed("LOCALHOST", list),
            Some(Any),
            "exact: any address"
        );
        assert_eq!(host_allowed("127.0.0.1", list), Some(Any));
        assert_eq!(host_allowed("amazonaws.com", list), None);
        assert_eq!(host_allowed("evilamazonaws.com", list), None);
        assert_eq!(host_allowed("169.254.169.254", list), None);
        assert_eq!(
            host_allowed("sqs.us-east-1.amazonaws.com.evil.example", list),
            None
        );
        assert_eq!(host_allowed("anything", "*"), Some(PublicOnly));
        assert_eq!(
            host_allowed("127.0.0.1", "*"),
            Some(PublicOnly),
            "a wildcard never allows loopback"
        );
        assert_eq!(
            host_allowed(
                "sqs.us-east-1.amazonaws.com",
                "*,sqs.us-east-1.amazonaws.com"
            ),
            Some(Any)
        );
        assert_eq!(host_allowed("anything", ""), None);
    }

    #[test]
    fn public_addresses() {
        for a in [
            "52.94.0.1",
            "2600:1f18::1",
            "::ffff:52.94.0.1",
            "100.128.0.1",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::23",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn service_endpoint_fallbacks() {
        assert_eq!(
            for_service(None, None, "eu-west-1").unwrap().base,
            "https://sqs.eu-west-1.amazonaws.com"
        );
        let e = for_service(
            None,
            Some("http://localhost:4566/000000000000/login-queue"),
            "us-east-1",
        )
        .unwrap();
        assert_eq!(e.base, "http://localhost:4566");
        let e = for_service(
            Some("http://127.0.0.1:9"),
            Some("http://localhost:4566/0/q"),
            "us-east-1",
        )
        .unwrap();
        assert_eq!(e.base, "http://127.0.0.1:9");
    }
}

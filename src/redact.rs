//! Finding and masking secrets in text, plain Rust: PEM private-key blocks (whatever quoting or
//! escaping surrounds them in an SQL statement), literal secrets a function was given, in text
//! that calls set_token_key() anything shaped like a token key (64+ hex digits, 43+ base64
//! characters), and in text that names sqs_loader.proxy the user information of URLs. Used on statement text in place (same length, so positions in it stay
//! valid) and on copies of log messages.

use std::ops::Range;

const BEGIN: &[u8] = b"-----BEGIN ";
const KEY_MARK: &[u8] = b"PRIVATE KEY-----";
const END: &[u8] = b"-----END ";
/// What a masked byte becomes.
pub const MASK: u8 = b'*';

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() || needle.is_empty() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The bodies of PEM private-key blocks in `text`: from the end of each
/// `-----BEGIN … PRIVATE KEY-----` line to the start of the matching `-----END`, or to the end
/// of the text when the block is cut off (a truncated log line or activity entry).
pub fn private_key_bodies(text: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(b) = find(text, BEGIN, at) {
        // The header must say PRIVATE KEY before the line ends (RSA, ENCRYPTED, EC... all count).
        let line_end = text[b..]
            .iter()
            .position(|&c| c == b'\n' || c == b'\\' || c == b'\'')
            .map_or(text.len(), |p| b + p);
        let Some(k) = find(&text[..line_end], KEY_MARK, b) else {
            at = b + BEGIN.len();
            continue;
        };
        let start = k + KEY_MARK.len();
        let end = find(text, END, start).unwrap_or(text.len());
        out.push(start..end);
        at = end.max(start) + 1;
        if end == text.len() {
            break;
        }
    }
    out
}

/// Whether `text` holds a PEM private-key block.
pub fn has_private_key(text: &[u8]) -> bool {
    !private_key_bodies(text).is_empty()
}

fn is_key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='
}

/// What to mask besides private-key blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules<'a> {
    /// Literal secrets (those shorter than 4 bytes are left alone: masking every "a" would hide
    /// the statement, not the secret).
    pub secrets: &'a [&'a [u8]],
    /// Also mask runs that look like a token key (see [`mentions_token_key`]).
    pub token_key_literals: bool,
}

/// Whether the text calls set_token_key(), so that token-key-shaped runs in it (or in the log
/// lines that quote it) are to be masked.
pub fn mentions_token_key(text: &[u8]) -> bool {
    find(text, b"set_token_key", 0).is_some()
}

/// Runs of 64 or more hex digits, and of 43 or more base64 characters (with `=` padding): a
/// 32-byte key written as hex (`'\x…'`, `decode('…', 'hex')`) or base64.
fn token_key_runs(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let hex_end = i + text[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        let b64_end = i + text[i..].iter().take_while(|c| is_key_byte(**c)).count();
        if hex_end - i >= 64 {
            out.push(i..hex_end);
            i = hex_end;
        } else if b64_end - i >= 43 {
            out.push(i..b64_end);
            i = b64_end;
        } else {
            i = b64_end.max(i + 1);
        }
    }
    out
}

/// Whether the text names the proxy setting (in any case), so that the user information of the
/// URLs in it (`http://user:password@host`) is to be masked.
pub fn mentions_proxy(text: &[u8]) -> bool {
    const NAME: &[u8] = b"sqs_loader.proxy";
    text.windows(NAME.len())
        .any(|w| w.eq_ignore_ascii_case(NAME))
}

/// The user information of every URL in `text`: what lies between `://` and the last `@`
/// before the authority ends (at `/`, `?`, `#`, a quote, a backslash or white space).
fn url_userinfo(text: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = find(text, b"://", at) {
        let start = p + 3;
        let end = text[start..]
            .iter()
            .position(|&c| {
                matches!(c, b'/' | b'?' | b'#' | b'\'' | b'"' | b'\\') || c.is_ascii_whitespace()
            })
            .map_or(text.len(), |e| start + e);
        if let Some(sign) = text[start..end].iter().rposition(|&c| c == b'@') {
            out.push(start..start + sign);
        }
        at = start;
    }
    out
}

/// The user information to mask: that of the URLs in `text` if it names the proxy setting.
fn proxy_userinfo(text: &[u8]) -> Vec<Range<usize>> {
    if mentions_proxy(text) {
        url_userinfo(text)
    } else {
        Vec::new()
    }
}

/// Whether `text` holds anything [`mask_in_place`] would mask.
pub fn holds_secret(text: &[u8], rules: &Rules) -> bool {
    has_private_key(text)
        || !proxy_userinfo(text).is_empty()
        || rules
            .secrets
            .iter()
            .any(|s| s.len() >= 4 && find(text, s, 0).is_some())
        || (rules.token_key_literals && !token_key_runs(text).is_empty())
}

/// Mask, in place, every base64 character of every private-key body, every occurrence of each
/// literal secret, the user information of URLs in text naming the proxy setting and, if
/// asked, every token-key-shaped run. The length never changes. Returns
/// whether anything was masked.
pub fn mask_in_place(text: &mut [u8], rules: &Rules) -> bool {
    let secrets = rules.secrets;
    let mut changed = false;
    if rules.token_key_literals {
        for r in token_key_runs(text) {
            text[r].fill(MASK);
            changed = true;
        }
    }
    for r in proxy_userinfo(text) {
        if !r.is_empty() {
            text[r].fill(MASK);
            changed = true;
        }
    }
    for r in private_key_bodies(text) {
        for c in &mut text[r] {
            if is_key_byte(*c) {
                *c = MASK;
                changed = true;
            }
        }
    }
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        let mut at = 0;
        while let Some(p) = find(text, s, at) {
            text[p..p + s.len()].fill(MASK);
            changed = true;
            at = p + s.len();
        }
    }
    changed
}

/// A masked copy of `text`, or None when there is nothing to mask.
pub fn masked(text: &str, rules: &Rules) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    if !mask_in_place(&mut bytes, rules) {
        return None;
    }
    // Masking replaces ASCII bytes of the secrets with ASCII; a secret that cut a multi-byte
    // character in half is replaced whole, so the result is valid UTF-8 except in that case.
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;

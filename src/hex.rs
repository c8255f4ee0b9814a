//! Lowercase hexadecimal, the one encoder of the crate (token key ids, key fingerprints, MD5 of
//! message bodies, SigV4 hashes).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append `bytes` in lowercase hexadecimal to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// `bytes` in lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    push_hex(&mut s, bytes);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn lowercase_two_digits_per_byte() {
        assert_eq!(super::hex(&[]), "");
        assert_eq!(super::hex(&[0, 9, 10, 0x7f, 0xff]), "00090a7fff");
        let mut s = "x".to_string();
        super::push_hex(&mut s, &[0xab]);
        assert_eq!(s, "xab");
    }
}

use super::*;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use std::collections::HashSet;
use std::sync::OnceLock;

/// One 2048-bit key pair for all tests (generation is slow in debug builds).
pub fn test_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap())
}

#[test]
fn tokens_are_deterministic_keyed_and_short() {
    let k = TokenKey::from_bytes(&[7; 32]).unwrap();
    let k2 = TokenKey::from_bytes(&[8; 32]).unwrap();
    let t = k.token("199.172.111.135");
    assert_eq!(t, k.token("199.172.111.135"));
    assert_ne!(t, k.token("199.172.111.136"));
    assert_ne!(t, k2.token("199.172.111.135"));
    assert_eq!(t.len(), TOKEN_LEN);
    assert!(
        t.starts_with("v1.")
            && t[3..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    for v in ["", "é漢字🙂", "2001:db8::1", &"x".repeat(10_000)] {
        assert_eq!(k.token(v).len(), TOKEN_LEN);
    }
    assert_ne!(k.id(), k2.id());
    assert_eq!(k.id().len(), 16);
}

#[test]
fn no_collisions_in_100k_values() {
    let k = TokenKey::from_bytes(&new_key()).unwrap();
    let set: HashSet<String> = (0..100_000u32)
        .map(|i| k.token(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)))
        .collect();
    assert_eq!(set.len(), 100_000);
}

/// The vault key of a token is the first 16 bytes of the SHA-256 of its text (Python's hashlib
/// gave the expected bytes; src/pg_tests/masking.rs checks SQL's token_id() agrees on stored rows).
#[test]
fn vault_id_is_the_first_16_bytes_of_the_sha256_of_the_text() {
    let t = Token(*b"v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(hex(&t.vault_id()), "8e12b4c8ddf20182a837f06dbee70353");
}

#[test]
fn seal_open_round_trip_and_binding() {
    let dk = new_key();
    let s = seal(&dk, "v1.tok", b"593-47-5928");
    assert_eq!(open(&dk, "v1.tok", &s).unwrap(), b"593-47-5928");
    assert_ne!(seal(&dk, "v1.tok", b"593-47-5928"), s, "random nonce");
    assert!(matches!(
        open(&dk, "v1.other", &s),
        Err(MaskError::Corrupt(_))
    ));
    assert!(matches!(
        open(&new_key(), "v1.tok", &s),
        Err(MaskError::Corrupt(_))
    ));
    let mut t = s.clone();
    t[20] ^= 1;
    assert!(open(&dk, "v1.tok", &t).is_err());
    assert!(open(&dk, "v1.tok", &s[..10]).is_err());
}

#[test]
fn sealer_nonces_never_repeat() {
    let dk = new_key();
    let mut s = Sealer::new(&dk);
    let nonces: HashSet<Vec<u8>> = (0..10_000)
        .map(|i| s.seal("t", format!("{i}").as_bytes())[..12].to_vec())
        .collect();
    assert_eq!(nonces.len(), 10_000);
    let sealed = s.seal("v1.t", b"x");
    assert_eq!(open(&dk, "v1.t", &sealed).unwrap(), b"x");
}

#[test]
fn wrap_unwrap_with_all_key_encodings() {
    let private = test_key();
    let public = private.to_public_key();
    let dk = new_key();
    let wrapped = wrap(&public, &dk);
    let pkcs8 = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    let pkcs1 = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(private, LineEnding::LF).unwrap();
    for pem in [pkcs8.as_str(), pkcs1.as_str()] {
        assert_eq!(
            unwrap(&parse_private_key(pem, None).unwrap(), &wrapped).unwrap(),
            dk
        );
    }
    let pub_pem = public_key_pem(&public);
    assert_eq!(
        fingerprint(&parse_public_key(&pub_pem).unwrap()),
        fingerprint(&public)
    );
    let pub_pkcs1 = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(&public, LineEnding::LF).unwrap();
    assert_eq!(
        fingerprint(&parse_public_key(&pub_pkcs1).unwrap()),
        fingerprint(&public)
    );
}

#[test]
fn encrypted_pkcs8() {
    let private = test_key();
    let enc = private
        .to_pkcs8_encrypted_pem(b"correct horse", LineEnding::LF)
        .unwrap();
    assert!(parse_private_key(&enc, Some("correct horse")).is_ok());
    assert!(matches!(
        parse_private_key(&enc, Some("wrong")),
        Err(MaskError::BadKey(_))
    ));
    assert!(matches!(
        parse_private_key(&enc, None),
        Err(MaskError::BadKey(_))
    ));
}

#[test]
fn wrong_key_is_detected() {
    let other = PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    let wrapped = wrap(&test_key().to_public_key(), &new_key());
    assert_eq!(unwrap(&other, &wrapped), Err(MaskError::WrongKey));
}

#[test]
fn garbage_keys() {
    assert!(parse_public_key("hello").is_err());
    assert!(parse_private_key(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        None
    )
    .is_err());
    let small = PrivateKey::new(&mut getrandom::SysRng, 1024).unwrap();
    let err = parse_public_key(&public_key_pem(&small.to_public_key())).unwrap_err();
    assert!(err.to_string().contains("at least 2048"), "{err}");
    // Error messages never echo key material.
    let pem = test_key().to_pkcs8_pem(LineEnding::LF).unwrap();
    let broken = pem.replace('A', "#");
    let msg = parse_private_key(&broken, None).unwrap_err().to_string();
    assert!(!msg.contains("MII") && msg.len() < 200, "{msg}");
}

//! PII masking primitives, plain Rust:
//! - token = "v1." + base64url(HMAC-SHA256(token key, value)): deterministic and keyed, so equal
//!   values give equal tokens (GROUP BY works) and nobody without the token key can test guesses;
//! - envelope encryption for recovery: the value is sealed with AES-256-GCM under a random data
//!   key (the token is the associated data), and the data key is wrapped with RSA-OAEP-SHA256
//!   under the installed public key. Only the RSA private key holder can unwrap it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};

pub const TOKEN_PREFIX: &str = "v1.";
/// Length of every token: "v1." + 43 base64url characters.
pub const TOKEN_LEN: usize = 46;
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("{0}")]
    BadKey(String),
    #[error(
        "this private key cannot decrypt the value: it is not the key the value is protected with"
    )]
    WrongKey,
    #[error("vault entry is corrupted: {0}")]
    Corrupt(String),
    /// Missing or mismatched keys in the database.
    #[error("{message}")]
    State { message: String, hint: &'static str },
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random number generator failed");
    b
}

/// A fresh 256-bit key from the OS CSPRNG.
pub fn new_key() -> [u8; KEY_LEN] {
    random_bytes()
}

/// The HMAC key that makes tokens.
pub struct TokenKey([u8; KEY_LEN]);

impl TokenKey {
    pub fn from_bytes(b: &[u8]) -> Result<TokenKey, MaskError> {
        let arr: [u8; KEY_LEN] = b.try_into().map_err(|_| {
            MaskError::BadKey(format!(
                "the token key must be {KEY_LEN} bytes, not {}",
                b.len()
            ))
        })?;
        Ok(TokenKey(arr))
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// A public identifier of the key (not the key): recorded with the vault so a database
    /// restored without its token key is detected instead of silently minting new tokens.
    pub fn id(&self) -> String {
        hex(&self.mac(&[b"sqs_loader token key id"])[..8])
    }

    pub fn token(&self, value: &str) -> String {
        let mut t = String::with_capacity(TOKEN_LEN);
        t.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(self.mac(&[value.as_bytes()]), &mut t);
        t
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A data key ready to seal values. Nonces are the NIST SP 800-38D deterministic construction:
/// a random 32-bit field fixed for this sealer and a 64-bit counter, so no nonce repeats under a
/// key as long as one sealer (one backend) owns the key — which is how data keys are used.
pub struct Sealer {
    cipher: Aes256Gcm,
    prefix: [u8; 4],
    counter: u64,
}

impl Sealer {
    pub fn new(data_key: &[u8; KEY_LEN]) -> Sealer {
        Sealer {
            cipher: Aes256Gcm::new(data_key.into()),
            prefix: random_bytes(),
            counter: 0,
        }
    }

    /// nonce || AES-256-GCM(value) (ciphertext + tag), with the token as associated data.
    pub fn seal(&mut self, token: &str, value: &[u8]) -> Vec<u8> {
        self.counter += 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.prefix);
        nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: value,
                    aad: token.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a small value cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }
}

/// Seal one value under a fresh sealer (tests and one-off use).
pub fn seal(data_key: &[u8; KEY_LEN], token: &str, value: &[u8]) -> Vec<u8> {
    Sealer::new(data_key).seal(token, value)
}

pub fn open(data_key: &[u8; KEY_LEN], token: &str, sealed: &[u8]) -> Result<Vec<u8>, MaskError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(MaskError::Corrupt("sealed value too short".into()));
    }
    let cipher = Aes256Gcm::new(data_key.into());
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ct,
                aad: token.as_bytes(),
            },
        )
        .map_err(|_| {
            MaskError::Corrupt(
                "authentication failed (altered ciphertext, or moved to another token)".into(),
            )
        })
}

/// Parse an RSA public key: PEM "PUBLIC KEY" (SPKI) or "RSA PUBLIC KEY" (PKCS#1).
pub fn parse_public_key(pem: &str) -> Result<PublicKey, MaskError> {
    let pem = pem.trim();
    let key = PublicKey::from_public_key_pem(pem)
        .or_else(|_| PublicKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            MaskError::BadKey(
                "not an RSA public key in PEM form (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)"
                    .into(),
            )
        })?;
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(MaskError::BadKey(format!(
            "RSA keys must have at least {MIN_RSA_BITS} bits, this one has {bits}"
        )));
    }
    Ok(key)
}

/// Parse an RSA private key: PEM PKCS#8 ("PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY"), or
/// encrypted PKCS#8 ("ENCRYPTED PRIVATE KEY", needs the passphrase).
pub fn parse_private_key(pem: &str, passphrase: Option<&str>) -> Result<PrivateKey, MaskError> {
    let pem = pem.trim();
    if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        let pass = passphrase.ok_or_else(|| {
            MaskError::BadKey("the private key is encrypted: give its passphrase".into())
        })?;
        return PrivateKey::from_pkcs8_encrypted_pem(pem, pass).map_err(|_| {
            MaskError::BadKey(
                "cannot decrypt the private key: wrong passphrase or unsupported encryption".into(),
            )
        });
    }
    PrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| PrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            MaskError::BadKey(
                "not an RSA private key in PEM form (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)"
                    .into(),
            )
        })
}

/// SHA-256 of the key's SubjectPublicKeyInfo (DER), hex: identifies a key pair without revealing it.
pub fn fingerprint(key: &PublicKey) -> String {
    let der = key.to_public_key_der().expect("an RSA public key encodes");
    hex(&Sha256::digest(der.as_bytes()))
}

pub fn public_key_pem(key: &PublicKey) -> String {
    key.to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .expect("an RSA public key encodes")
}

/// One RSA-OAEP(SHA-256) encryption per data key.
pub fn wrap(public: &PublicKey, data_key: &[u8; KEY_LEN]) -> Vec<u8> {
    public
        .oaep_encrypt::<Sha256>(data_key)
        .expect("OAEP of 32 bytes fits every key of 2048 bits or more")
}

pub fn unwrap(private: &PrivateKey, wrapped: &[u8]) -> Result<[u8; KEY_LEN], MaskError> {
    let k = private
        .oaep_decrypt::<Sha256>(wrapped)
        .map_err(|_| MaskError::WrongKey)?;
    k.as_slice()
        .try_into()
        .map_err(|_| MaskError::Corrupt("unwrapped data key has the wrong length".into()))
}

#[cfg(test)]
pub mod tests {
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
        let pub_pkcs1 =
            rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(&public, LineEnding::LF).unwrap();
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
}

//! PII masking primitives, plain Rust:
//! - token = "v1." + base64url(HMAC-SHA256(token key, value)): deterministic and keyed, so equal
//!   values give equal tokens (GROUP BY works) and nobody without the token key can test guesses;
//! - envelope encryption for recovery: the value is sealed with AES-256-GCM under a random data
//!   key (the token is the associated data), and the data key is wrapped with RSA-OAEP-SHA256
//!   under the installed public key. Only the RSA private key holder can unwrap it.

use crate::hex::hex;
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

/// The HMAC key that makes tokens, keyed once: each token clones the keyed state instead of
/// hashing the key's inner and outer blocks again (half the SHA-256 work per value).
pub struct TokenKey(Hmac<Sha256>);

impl TokenKey {
    pub fn from_bytes(b: &[u8]) -> Result<TokenKey, MaskError> {
        let arr: [u8; KEY_LEN] = b.try_into().map_err(|_| {
            MaskError::BadKey(format!(
                "the token key must be {KEY_LEN} bytes, not {}",
                b.len()
            ))
        })?;
        Ok(TokenKey(
            <Hmac<Sha256> as KeyInit>::new_from_slice(&arr).expect("HMAC takes any key length"),
        ))
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.0.clone();
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
        self.token_and_tag(value).0.as_str().to_string()
    }

    /// The token and its first 128 bits of HMAC (what [`crate::known`] remembers).
    pub fn token_and_tag(&self, value: &str) -> (Token, u128) {
        let mac = self.mac(&[value.as_bytes()]);
        let mut t = [0u8; TOKEN_LEN];
        t[..TOKEN_PREFIX.len()].copy_from_slice(TOKEN_PREFIX.as_bytes());
        let n = URL_SAFE_NO_PAD
            .encode_slice(mac, &mut t[TOKEN_PREFIX.len()..])
            .expect("32 bytes are 43 base64 characters");
        debug_assert_eq!(TOKEN_PREFIX.len() + n, TOKEN_LEN);
        let tag = u128::from_le_bytes(mac[..16].try_into().expect("16 of 32 bytes"));
        (Token(t), tag)
    }
}

/// A token, held inline (no allocation): masking many values makes many of them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    pub fn as_str(&self) -> &str {
        // Always ASCII: the prefix and base64url characters.
        std::str::from_utf8(&self.0).expect("a token is ASCII")
    }

    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// The token's key in the vault (`sqs_loader.token_id()` in SQL): the first 16 bytes of the
    /// SHA-256 of its text. Not its HMAC's bytes, which only its first 22 characters carry:
    /// another text sharing those would reach this token's row through `forget_pii()`.
    pub fn vault_id(&self) -> [u8; 16] {
        let h = Sha256::digest(self.0);
        h[..16].try_into().expect("16 of 32 bytes")
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
#[path = "mask_tests.rs"]
pub mod tests;

//! SCRAM credential derivation and password checks (RFC 5802 §3, RFC 7677).

use std::borrow::Cow;

use hmac::{EagerHash, Hmac, KeyInit, Mac};
use imbus_core::{Credentials, ScramCredentials, ScramHash, ValidationError};
use rand::CryptoRng;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The smallest iteration count accepted for new credentials (RFC 5802 §5.1 and RFC 7677
/// §4 ask for at least 4096).
pub const MIN_ITERATIONS: u32 = 4096;

/// The iteration count used when none is configured.
pub const DEFAULT_ITERATIONS: u32 = 10_000;

/// The length in bytes of the salts [`derive()`] generates.
pub const SALT_LEN: usize = 16;

/// Why credentials could not be derived from a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    /// The iteration count is below [`MIN_ITERATIONS`].
    #[error(
        "the iteration count {given} is too low: SCRAM credentials need at least {minimum} iterations"
    )]
    TooFewIterations {
        /// The count asked for.
        given: u32,
        /// The smallest accepted count.
        minimum: u32,
    },
    /// The password is empty, or empty once prepared.
    #[error("the password is empty")]
    EmptyPassword,
    /// The password contains characters SASLprep (RFC 4013) prohibits, such as control
    /// characters or unassigned code points.
    #[error("the password is not valid for SASLprep (RFC 4013): {0}")]
    Password(String),
    /// The derived values were refused by the account model (e.g. an iteration count
    /// above 2³¹−1).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Normalizes a password with SASLprep (RFC 4013), as SCRAM and PLAIN require before a
/// password is hashed or compared.
pub fn saslprep(password: &str) -> Result<Cow<'_, str>, DeriveError> {
    let prepared =
        stringprep::saslprep(password).map_err(|e| DeriveError::Password(e.to_string()))?;
    if prepared.is_empty() {
        return Err(DeriveError::EmptyPassword);
    }
    Ok(prepared)
}

/// Derives the SCRAM-SHA-1 and SCRAM-SHA-256 credentials of a password, each with its own
/// random salt of [`SALT_LEN`] bytes from `rng`.
///
/// The password is normalized with SASLprep first; the iteration count must be at least
/// [`MIN_ITERATIONS`]. The password itself is not kept.
pub fn derive(
    password: &str,
    iterations: u32,
    rng: &mut impl CryptoRng,
) -> Result<Credentials, DeriveError> {
    let mut salt1 = vec![0; SALT_LEN];
    rng.fill_bytes(&mut salt1);
    let mut salt256 = vec![0; SALT_LEN];
    rng.fill_bytes(&mut salt256);
    let sha1 = derive_with_salt(ScramHash::Sha1, password, salt1, iterations)?;
    let sha256 = derive_with_salt(ScramHash::Sha256, password, salt256, iterations)?;
    Ok(Credentials::new(sha1, sha256)?)
}

/// Derives the credentials of one hash function with a given salt (RFC 5802 §3):
///
/// ```text
/// SaltedPassword = PBKDF2-HMAC-H(SASLprep(password), salt, iterations)
/// ClientKey      = HMAC(SaltedPassword, "Client Key")
/// StoredKey      = H(ClientKey)
/// ServerKey      = HMAC(SaltedPassword, "Server Key")
/// ```
pub fn derive_with_salt(
    hash: ScramHash,
    password: &str,
    salt: Vec<u8>,
    iterations: u32,
) -> Result<ScramCredentials, DeriveError> {
    if iterations < MIN_ITERATIONS {
        return Err(DeriveError::TooFewIterations {
            given: iterations,
            minimum: MIN_ITERATIONS,
        });
    }
    // Validate the cheap things before running PBKDF2.
    if i32::try_from(iterations).is_err() {
        return Err(ValidationError::Scram {
            hash,
            problem: format!(
                "the iteration count is {iterations}, it must be 1 to {}",
                i32::MAX
            ),
        }
        .into());
    }
    let password = saslprep(password)?;
    let salted = salted_password(hash, password.as_bytes(), &salt, iterations);
    let (stored_key, server_key) = keys_from_salted(hash, &salted);
    Ok(ScramCredentials::new(
        hash, salt, iterations, stored_key, server_key,
    )?)
}

/// Checks a password against stored credentials, as PLAIN authentication does: the
/// password is normalized with SASLprep, the StoredKey recomputed from the stored salt and
/// iteration count, and compared in constant time.
///
/// Returns `false` for a wrong password and for a password SASLprep refuses (no such
/// password can have been stored). The cost is one PBKDF2 run with the stored iteration
/// count.
pub fn verify_password(credentials: &ScramCredentials, password: &str) -> bool {
    let Ok(password) = saslprep(password) else {
        return false;
    };
    verify_keys(
        credentials.hash(),
        credentials.salt(),
        credentials.iterations(),
        credentials.stored_key(),
        password.as_bytes(),
    )
}

/// Recomputes StoredKey from an already prepared password and compares it in constant
/// time.
pub(crate) fn verify_keys(
    hash: ScramHash,
    salt: &[u8],
    iterations: u32,
    stored_key: &[u8],
    prepared_password: &[u8],
) -> bool {
    let salted = salted_password(hash, prepared_password, salt, iterations);
    let (computed, _) = keys_from_salted(hash, &salted);
    bool::from(computed.ct_eq(stored_key))
}

/// `(StoredKey, ServerKey)` from a SaltedPassword.
fn keys_from_salted(hash: ScramHash, salted: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let client_key = hmac(hash, salted, &[b"Client Key"]);
    let stored_key = digest(hash, &client_key);
    let server_key = hmac(hash, salted, &[b"Server Key"]);
    (stored_key, server_key)
}

/// PBKDF2 with HMAC-H, output as long as the hash.
pub(crate) fn salted_password(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0; hash.output_len()];
    match hash {
        ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
        ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
    }
    out
}

/// HMAC-H(key, concatenation of `parts`).
pub(crate) fn hmac(hash: ScramHash, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => hmac_with::<Sha1>(key, parts),
        ScramHash::Sha256 => hmac_with::<Sha256>(key, parts),
    }
}

fn hmac_with<D: EagerHash>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length (longer ones are hashed, shorter ones padded), so
    // `new_from_slice` cannot fail; its `Result` exists for MACs with fixed key sizes.
    #[allow(clippy::expect_used)]
    let mut mac =
        <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// H(data).
pub(crate) fn digest(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn saslprep_follows_rfc_4013_examples() {
        // RFC 4013 §3.
        assert_eq!(saslprep("I\u{00AD}X").unwrap(), "IX");
        assert_eq!(saslprep("user").unwrap(), "user");
        assert_eq!(saslprep("USER").unwrap(), "USER");
        assert_eq!(saslprep("\u{00AA}").unwrap(), "a");
        assert_eq!(saslprep("\u{2168}").unwrap(), "IX");
        assert!(matches!(
            saslprep("\u{0007}"),
            Err(DeriveError::Password(_))
        ));
        assert!(matches!(
            saslprep("\u{0627}\u{0031}"),
            Err(DeriveError::Password(_))
        ));
        // A non-ASCII space maps to an ASCII space.
        assert_eq!(saslprep("a\u{00A0}b").unwrap(), "a b");
        assert_eq!(saslprep(""), Err(DeriveError::EmptyPassword));
        assert_eq!(saslprep("\u{00AD}"), Err(DeriveError::EmptyPassword));
    }

    #[test]
    fn low_iteration_counts_are_refused() {
        let mut rng = StdRng::seed_from_u64(1);
        let err = derive("pencil", 4095, &mut rng).unwrap_err();
        assert_eq!(
            err,
            DeriveError::TooFewIterations {
                given: 4095,
                minimum: MIN_ITERATIONS
            }
        );
        assert_eq!(
            err.to_string(),
            "the iteration count 4095 is too low: SCRAM credentials need at least 4096 iterations"
        );
        let err = derive_with_salt(ScramHash::Sha1, "pencil", vec![1; 16], u32::MAX).unwrap_err();
        assert!(matches!(err, DeriveError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn derived_credentials_verify_their_password_only() {
        let mut rng = StdRng::seed_from_u64(7);
        let creds = derive("pencil", MIN_ITERATIONS, &mut rng).unwrap();
        assert_eq!(creds.sha1().salt().len(), SALT_LEN);
        assert_ne!(creds.sha1().salt(), creds.sha256().salt());
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let c = creds.for_hash(hash);
            assert_eq!(c.iterations(), MIN_ITERATIONS);
            assert!(verify_password(c, "pencil"));
            assert!(!verify_password(c, "pencil "));
            assert!(!verify_password(c, "Pencil"));
            assert!(!verify_password(c, "\u{0007}"));
        }
    }

    #[test]
    fn passwords_are_normalized_before_hashing() {
        let a = derive_with_salt(ScramHash::Sha256, "I\u{00AD}X", vec![9; 16], 4096).unwrap();
        let b = derive_with_salt(ScramHash::Sha256, "IX", vec![9; 16], 4096).unwrap();
        assert_eq!(a, b);
        assert!(verify_password(&a, "\u{2168}"));
        assert!(matches!(
            derive_with_salt(ScramHash::Sha256, "a\u{0007}", vec![9; 16], 4096),
            Err(DeriveError::Password(_))
        ));
    }
}

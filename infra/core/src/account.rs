use std::fmt;

use jid::BareJid;

use crate::{Timestamp, ValidationError};

/// A change to an account (topic `accounts`).
///
/// Accounts carry SCRAM credentials (RFC 5802, RFC 7677) only: a password never reaches
/// the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    /// A new account.
    Created(AccountState),
    /// New credentials for an existing account (a password change or reset).
    Changed(AccountState),
    /// The account was deleted.
    Deleted(AccountDeleted),
}

impl AccountEvent {
    /// The account the event is about.
    pub fn jid(&self) -> &BareJid {
        match self {
            AccountEvent::Created(state) | AccountEvent::Changed(state) => &state.jid,
            AccountEvent::Deleted(deleted) => &deleted.jid,
        }
    }
}

/// An account as created or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// The account's bare JID.
    pub jid: BareJid,
    /// What the server needs to verify a SCRAM authentication.
    pub credentials: Credentials,
    /// When the change was made.
    pub at: Timestamp,
    /// Who made it: the user, an administrator's JID, or the name of a tool.
    pub by: String,
}

/// An account was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDeleted {
    /// The account's bare JID.
    pub jid: BareJid,
    /// When it was deleted.
    pub at: Timestamp,
    /// Who deleted it.
    pub by: String,
}

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The length in bytes of the hash output, and so of StoredKey and ServerKey.
    pub const fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// The SASL mechanism name.
    pub const fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }
}

impl fmt::Display for ScramHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mechanism())
    }
}

/// The server-side SCRAM values of one account for one hash function (RFC 5802 §3):
/// `salt` and `iterations` are sent to the client, `StoredKey` verifies the client's
/// proof and `ServerKey` signs the server's answer. They do not reveal the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    hash: ScramHash,
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramCredentials {
    /// The longest accepted salt.
    pub const MAX_SALT_LEN: usize = 1024;

    /// Checks and builds SCRAM credentials: the salt is 1 to [`Self::MAX_SALT_LEN`]
    /// bytes, the iteration count 1 to 2³¹−1, and both keys as long as the hash output.
    pub fn new(
        hash: ScramHash,
        salt: Vec<u8>,
        iterations: u32,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    ) -> Result<Self, ValidationError> {
        let problem = |problem: String| ValidationError::Scram { hash, problem };
        if salt.is_empty() || salt.len() > Self::MAX_SALT_LEN {
            return Err(problem(format!(
                "the salt is {} bytes, it must be 1 to {}",
                salt.len(),
                Self::MAX_SALT_LEN
            )));
        }
        if iterations == 0 || i32::try_from(iterations).is_err() {
            return Err(problem(format!(
                "the iteration count is {iterations}, it must be 1 to {}",
                i32::MAX
            )));
        }
        for (name, key) in [("StoredKey", &stored_key), ("ServerKey", &server_key)] {
            if key.len() != hash.output_len() {
                return Err(problem(format!(
                    "{name} is {} bytes, it must be {}",
                    key.len(),
                    hash.output_len()
                )));
            }
        }
        Ok(Self {
            hash,
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }

    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn stored_key(&self) -> &[u8] {
        &self.stored_key
    }

    pub fn server_key(&self) -> &[u8] {
        &self.server_key
    }
}

/// Keys are secrets: debug output shows only their lengths.
impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("hash", &self.hash)
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// The SCRAM credentials of an account, for SCRAM-SHA-1 and SCRAM-SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    sha1: ScramCredentials,
    sha256: ScramCredentials,
}

impl Credentials {
    /// Pairs SHA-1 and SHA-256 credentials; each must be of its hash.
    pub fn new(sha1: ScramCredentials, sha256: ScramCredentials) -> Result<Self, ValidationError> {
        for (expected, given) in [(ScramHash::Sha1, &sha1), (ScramHash::Sha256, &sha256)] {
            if given.hash != expected {
                return Err(ValidationError::Scram {
                    hash: expected,
                    problem: format!("{} credentials were given instead", given.hash),
                });
            }
        }
        Ok(Self { sha1, sha256 })
    }

    pub fn sha1(&self) -> &ScramCredentials {
        &self.sha1
    }

    pub fn sha256(&self) -> &ScramCredentials {
        &self.sha256
    }

    /// The credentials for a mechanism.
    pub fn for_hash(&self, hash: ScramHash) -> &ScramCredentials {
        match hash {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(hash: ScramHash) -> ScramCredentials {
        let n = hash.output_len();
        ScramCredentials::new(hash, vec![1; 16], 4096, vec![2; n], vec![3; n]).unwrap()
    }

    #[test]
    fn scram_credentials_are_checked() {
        let ok = creds(ScramHash::Sha256);
        assert_eq!(ok.iterations(), 4096);
        assert_eq!(ok.stored_key(), &[2; 32]);
        assert_eq!(ok.salt().len(), 16);

        let err = ScramCredentials::new(ScramHash::Sha1, vec![], 4096, vec![0; 20], vec![0; 20])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid SCRAM-SHA-1 credentials: the salt is 0 bytes, it must be 1 to 1024"
        );
        assert!(
            ScramCredentials::new(ScramHash::Sha1, vec![1], 0, vec![0; 20], vec![0; 20]).is_err()
        );
        assert!(
            ScramCredentials::new(ScramHash::Sha1, vec![1], u32::MAX, vec![0; 20], vec![0; 20])
                .is_err()
        );
        let err = ScramCredentials::new(ScramHash::Sha256, vec![1], 1, vec![0; 20], vec![0; 32])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("StoredKey is 20 bytes, it must be 32"),
            "{err}"
        );
        let err = ScramCredentials::new(ScramHash::Sha256, vec![1], 1, vec![0; 32], vec![0; 33])
            .unwrap_err();
        assert!(err.to_string().contains("ServerKey is 33 bytes"), "{err}");
    }

    #[test]
    fn credentials_pair_the_right_hashes() {
        let pair = Credentials::new(creds(ScramHash::Sha1), creds(ScramHash::Sha256)).unwrap();
        assert_eq!(pair.for_hash(ScramHash::Sha1).hash(), ScramHash::Sha1);
        assert_eq!(pair.sha256().hash(), ScramHash::Sha256);
        let err = Credentials::new(creds(ScramHash::Sha256), creds(ScramHash::Sha256)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid SCRAM-SHA-1 credentials: SCRAM-SHA-256 credentials were given instead"
        );
    }

    #[test]
    fn debug_output_hides_keys() {
        let shown = format!("{:?}", creds(ScramHash::Sha1));
        assert!(
            shown.contains("<redacted>") && !shown.contains("[2, 2"),
            "{shown}"
        );
    }
}

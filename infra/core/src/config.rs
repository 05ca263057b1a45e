use std::fmt;

use crate::{Timestamp, ValidationError};

/// A setting was changed while the server runs (topic `config`). Components apply the change live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChanged {
    /// The setting's name, e.g. `offline.enabled`.
    pub key: ConfigKey,
    /// The new value as text; `None` resets the setting to the value of the configuration
    /// file, or its default.
    pub value: Option<String>,
    /// When the change was made.
    pub at: Timestamp,
    /// Who made it: an administrator's JID or the name of a tool.
    pub by: String,
}

/// The name of a setting: 1 to [`ConfigKey::MAX_LEN`] characters of
/// `a-z A-Z 0-9 . _ -`, by convention dotted (`offline.enabled`, `sip.inactive_timeout`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigKey(String);

impl ConfigKey {
    /// The longest setting name.
    pub const MAX_LEN: usize = 255;

    /// Checks and wraps a setting name.
    pub fn new(key: impl Into<String>) -> Result<Self, ValidationError> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.len() <= Self::MAX_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(key))
        } else {
            Err(ValidationError::ConfigKey(key))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_names_are_dotted_names() {
        for ok in [
            "offline.enabled",
            "sip.inactive_timeout",
            "rooms.history-size",
            "x",
        ] {
            assert_eq!(ConfigKey::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "offline enabled", "a=b", "sch\u{f6}n", &"k".repeat(256)] {
            assert_eq!(
                ConfigKey::new(bad),
                Err(ValidationError::ConfigKey(bad.to_owned()))
            );
        }
    }
}

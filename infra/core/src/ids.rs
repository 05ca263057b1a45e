use std::fmt;
use std::sync::Arc;

use crate::ValidationError;

/// The name of one gateway process, unique in a deployment.
///
/// Processors address a connected session through the topic `deliver.<gateway-id>`, so a
/// gateway id follows Kafka's topic-name rule: 1 to [`GatewayId::MAX_LEN`] characters of
/// `a-z A-Z 0-9 . _ -` (the limit leaves room for the `deliver.` prefix within Kafka's 249).
///
/// Shared, not copied, when cloned: a processor that keeps it in the state of each of the
/// gateway's sessions keeps one copy of the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayId(Arc<str>);

impl GatewayId {
    /// The longest gateway id: 249 (Kafka's topic-name limit) minus `deliver.`.
    pub const MAX_LEN: usize = 241;

    /// Checks and wraps a gateway id.
    pub fn new(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(id.into()))
        } else {
            Err(ValidationError::GatewayId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id a gateway gave one client session (its XML stream), unique within the gateway.
///
/// A session is identified by the pair ([`GatewayId`], [`SessionId`]): a new connection of
/// the same full JID gets a new session id, so events of an old connection can be told
/// apart from those of its replacement. A session id is 1 to [`SessionId::MAX_LEN`]
/// printable ASCII characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Box<str>);

impl SessionId {
    /// The longest session id.
    pub const MAX_LEN: usize = 256;

    /// Checks and wraps a session id.
    pub fn new(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        let ok =
            !id.is_empty() && id.len() <= Self::MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(id.into()))
        } else {
            Err(ValidationError::SessionId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0.into()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids_follow_the_topic_name_rule() {
        for ok in ["gw1", "xmpp-gw.eu-west_2", "A"] {
            assert_eq!(GatewayId::new(ok).unwrap().as_str(), ok);
        }
        let longest = "g".repeat(GatewayId::MAX_LEN);
        assert!(GatewayId::new(longest.clone()).is_ok());
        for bad in [
            "",
            "gw 1",
            "gw/1",
            "gw:1",
            "gw\u{e9}",
            &format!("{longest}g"),
        ] {
            assert_eq!(
                GatewayId::new(bad),
                Err(ValidationError::GatewayId(bad.to_owned())),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn session_ids_are_printable_ascii() {
        for ok in ["s1", "0b6576a6-5bec-4dd3-8d40-01d40c8127aa", "a/b+c=="] {
            assert_eq!(SessionId::new(ok).unwrap().to_string(), ok);
        }
        let too_long = "s".repeat(SessionId::MAX_LEN + 1);
        for bad in ["", "a b", "a\nb", "caf\u{e9}", too_long.as_str()] {
            assert!(SessionId::new(bad).is_err(), "{bad:?} should be refused");
        }
        let message = SessionId::new("a b").unwrap_err().to_string();
        assert!(message.contains("printable ASCII"), "{message}");
    }
}

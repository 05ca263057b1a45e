use std::borrow::Cow;
use std::fmt;

/// The SASL failure conditions of RFC 6120 §6.5, sent to the client as the child element of
/// `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslCondition {
    /// The client sent `<abort/>`.
    Aborted,
    /// The account is disabled.
    AccountDisabled,
    /// The credentials have expired.
    CredentialsExpired,
    /// The mechanism may only be used over an encrypted stream.
    EncryptionRequired,
    /// The base64 encoding of the data is wrong.
    IncorrectEncoding,
    /// The authorization identity is not one the client may act as.
    InvalidAuthzid,
    /// The mechanism is not supported or not offered.
    InvalidMechanism,
    /// The request is malformed.
    MalformedRequest,
    /// The mechanism is weaker than the server's policy allows.
    MechanismTooWeak,
    /// The credentials are wrong (also used for every failure that must not say more).
    NotAuthorized,
    /// A temporary error on the server side; the client may try again later.
    TemporaryAuthFailure,
}

impl SaslCondition {
    /// Every condition, in the order of RFC 6120 §6.5.
    pub const ALL: [SaslCondition; 11] = [
        SaslCondition::Aborted,
        SaslCondition::AccountDisabled,
        SaslCondition::CredentialsExpired,
        SaslCondition::EncryptionRequired,
        SaslCondition::IncorrectEncoding,
        SaslCondition::InvalidAuthzid,
        SaslCondition::InvalidMechanism,
        SaslCondition::MalformedRequest,
        SaslCondition::MechanismTooWeak,
        SaslCondition::NotAuthorized,
        SaslCondition::TemporaryAuthFailure,
    ];

    /// The element name of the condition, e.g. `not-authorized`.
    pub const fn element_name(self) -> &'static str {
        match self {
            SaslCondition::Aborted => "aborted",
            SaslCondition::AccountDisabled => "account-disabled",
            SaslCondition::CredentialsExpired => "credentials-expired",
            SaslCondition::EncryptionRequired => "encryption-required",
            SaslCondition::IncorrectEncoding => "incorrect-encoding",
            SaslCondition::InvalidAuthzid => "invalid-authzid",
            SaslCondition::InvalidMechanism => "invalid-mechanism",
            SaslCondition::MalformedRequest => "malformed-request",
            SaslCondition::MechanismTooWeak => "mechanism-too-weak",
            SaslCondition::NotAuthorized => "not-authorized",
            SaslCondition::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    /// The condition with this element name, if there is one.
    pub fn from_element_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.element_name() == name)
    }
}

impl fmt::Display for SaslCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.element_name())
    }
}

/// A failed authentication: the condition to send to the client and a reason for the
/// server's logs.
///
/// The reason says what went wrong in the server's terms (for an operator reading the
/// logs). It never says whether an account exists, so a gateway may also send it as the
/// `<text/>` of the failure; it never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SASL failure {condition}: {reason}")]
pub struct Failure {
    /// The RFC 6120 condition.
    pub condition: SaslCondition,
    /// What went wrong, for logs.
    pub reason: Cow<'static, str>,
}

impl Failure {
    /// A failure with a condition and a reason.
    pub fn new(condition: SaslCondition, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            condition,
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(SaslCondition::MalformedRequest, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_names_round_trip() {
        for condition in SaslCondition::ALL {
            assert_eq!(
                SaslCondition::from_element_name(condition.element_name()),
                Some(condition)
            );
        }
        assert_eq!(SaslCondition::from_element_name("bad-auth"), None);
        assert_eq!(
            SaslCondition::TemporaryAuthFailure.to_string(),
            "temporary-auth-failure"
        );
    }
}

//! Stream-level errors (RFC 6120 §4.9).
//!
//! A stream error is unrecoverable: the entity that detects it sends `<stream:error/>` with
//! one defined condition and closes the stream. Every failure the [`StreamParser`] detects is
//! reported as a [`StreamError`] carrying the condition the RFC prescribes, ready to be
//! written back with [`crate::writer::stream_error`].
//!
//! [`StreamParser`]: crate::StreamParser

use std::fmt;

use crate::element::Element;
use crate::ns;

/// The defined stream error conditions of RFC 6120 §4.9.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamErrorCondition {
    /// XML that cannot be processed (§4.9.3.1).
    BadFormat,
    /// An unsupported namespace prefix, or a missing one where required (§4.9.3.2).
    BadNamespacePrefix,
    /// A new stream conflicts with an existing one (§4.9.3.3).
    Conflict,
    /// The peer has not generated traffic for too long (§4.9.3.4).
    ConnectionTimeout,
    /// The `to` host is no longer serviced (§4.9.3.5).
    HostGone,
    /// The `to` host is not serviced (§4.9.3.6).
    HostUnknown,
    /// A stanza lacks a required `to` or `from`, or has a malformed one (§4.9.3.7).
    ImproperAddressing,
    /// The server hit an internal problem (§4.9.3.8).
    InternalServerError,
    /// The `from` address does not match an authorized JID (§4.9.3.9).
    InvalidFrom,
    /// The stream or content namespace is wrong (§4.9.3.10).
    InvalidNamespace,
    /// XML that fails validation on a validating server (§4.9.3.11).
    InvalidXml,
    /// Data sent before the stream was authenticated (§4.9.3.12).
    NotAuthorized,
    /// XML that violates the well-formedness rules of XML or XML namespaces (§4.9.3.13).
    NotWellFormed,
    /// A local policy was violated, e.g. a stanza size limit (§4.9.3.14).
    PolicyViolation,
    /// A remote server needed for the stream could not be reached (§4.9.3.15).
    RemoteConnectionFailed,
    /// The stream is reset, e.g. after a security-relevant change (§4.9.3.16).
    Reset,
    /// The server lacks resources to serve the stream (§4.9.3.17).
    ResourceConstraint,
    /// Restricted XML: comments, processing instructions, DTDs, entity references
    /// (§4.9.3.18, §11.1).
    RestrictedXml,
    /// The client should reconnect to another host (§4.9.3.19).
    SeeOtherHost,
    /// The server is shutting down (§4.9.3.20).
    SystemShutdown,
    /// No other condition applies (§4.9.3.21).
    UndefinedCondition,
    /// The stream is not UTF-8, or violates UTF-8 encoding rules (§4.9.3.22).
    UnsupportedEncoding,
    /// A required stream feature is not supported (§4.9.3.23).
    UnsupportedFeature,
    /// A first-level element whose namespace or name is not understood (§4.9.3.24).
    UnsupportedStanzaType,
    /// The stream `version` is not supported (§4.9.3.25).
    UnsupportedVersion,
}

impl StreamErrorCondition {
    /// Every defined condition, in RFC order.
    pub const ALL: [StreamErrorCondition; 25] = [
        Self::BadFormat,
        Self::BadNamespacePrefix,
        Self::Conflict,
        Self::ConnectionTimeout,
        Self::HostGone,
        Self::HostUnknown,
        Self::ImproperAddressing,
        Self::InternalServerError,
        Self::InvalidFrom,
        Self::InvalidNamespace,
        Self::InvalidXml,
        Self::NotAuthorized,
        Self::NotWellFormed,
        Self::PolicyViolation,
        Self::RemoteConnectionFailed,
        Self::Reset,
        Self::ResourceConstraint,
        Self::RestrictedXml,
        Self::SeeOtherHost,
        Self::SystemShutdown,
        Self::UndefinedCondition,
        Self::UnsupportedEncoding,
        Self::UnsupportedFeature,
        Self::UnsupportedStanzaType,
        Self::UnsupportedVersion,
    ];

    /// The element name of the condition, e.g. `"not-well-formed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadFormat => "bad-format",
            Self::BadNamespacePrefix => "bad-namespace-prefix",
            Self::Conflict => "conflict",
            Self::ConnectionTimeout => "connection-timeout",
            Self::HostGone => "host-gone",
            Self::HostUnknown => "host-unknown",
            Self::ImproperAddressing => "improper-addressing",
            Self::InternalServerError => "internal-server-error",
            Self::InvalidFrom => "invalid-from",
            Self::InvalidNamespace => "invalid-namespace",
            Self::InvalidXml => "invalid-xml",
            Self::NotAuthorized => "not-authorized",
            Self::NotWellFormed => "not-well-formed",
            Self::PolicyViolation => "policy-violation",
            Self::RemoteConnectionFailed => "remote-connection-failed",
            Self::Reset => "reset",
            Self::ResourceConstraint => "resource-constraint",
            Self::RestrictedXml => "restricted-xml",
            Self::SeeOtherHost => "see-other-host",
            Self::SystemShutdown => "system-shutdown",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnsupportedEncoding => "unsupported-encoding",
            Self::UnsupportedFeature => "unsupported-feature",
            Self::UnsupportedStanzaType => "unsupported-stanza-type",
            Self::UnsupportedVersion => "unsupported-version",
        }
    }

    /// Parses a condition element name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for StreamErrorCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream error: a defined condition, an optional human-readable text, and optional
/// extra content (the new host of `see-other-host`, an application-specific condition).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition}{}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StreamError {
    /// The defined condition.
    pub condition: StreamErrorCondition,
    /// Descriptive text (sent in `<text xml:lang='en'>`; never localized).
    pub text: Option<String>,
    /// For [`StreamErrorCondition::SeeOtherHost`]: the host (and optional port) to use.
    pub other_host: Option<String>,
    /// An application-specific condition element (RFC 6120 §4.9.4), e.g. XEP-0182's
    /// `<stanza-too-big xmlns='urn:xmpp:errors'/>`.
    pub application: Option<Box<Element>>,
}

impl StreamError {
    /// An error with a condition and no text.
    pub fn new(condition: StreamErrorCondition) -> Self {
        Self {
            condition,
            text: None,
            other_host: None,
            application: None,
        }
    }

    /// An error with a condition and a descriptive text.
    pub fn with_text(condition: StreamErrorCondition, text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::new(condition)
        }
    }

    /// `see-other-host` redirecting the peer to `host` (an IP literal must be bracketed
    /// when IPv6, per RFC 6120 §4.9.3.19).
    pub fn see_other_host(host: impl Into<String>) -> Self {
        Self {
            other_host: Some(host.into()),
            ..Self::new(StreamErrorCondition::SeeOtherHost)
        }
    }

    /// `policy-violation` for a first-level element larger than the advertised
    /// `max-bytes` (XEP-0478), carrying XEP-0182's `<stanza-too-big/>`.
    pub fn stanza_too_big(limit: usize) -> Self {
        Self {
            text: Some(format!(
                "first-level element exceeds the limit of {limit} bytes"
            )),
            application: Some(Box::new(Element::new("stanza-too-big", ns::XMPP_ERRORS))),
            ..Self::new(StreamErrorCondition::PolicyViolation)
        }
    }
}

impl From<StreamErrorCondition> for StreamError {
    fn from(condition: StreamErrorCondition) -> Self {
        Self::new(condition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_names_round_trip() {
        for c in StreamErrorCondition::ALL {
            assert_eq!(StreamErrorCondition::from_name(c.as_str()), Some(c));
        }
        assert_eq!(StreamErrorCondition::from_name("nope"), None);
        assert_eq!(
            StreamErrorCondition::RestrictedXml.to_string(),
            "restricted-xml"
        );
    }

    #[test]
    fn display_includes_text() {
        let e = StreamError::with_text(StreamErrorCondition::NotWellFormed, "bad tag");
        assert_eq!(e.to_string(), "not-well-formed: bad tag");
        assert_eq!(
            StreamError::new(StreamErrorCondition::Reset).to_string(),
            "reset"
        );
    }

    #[test]
    fn too_big_carries_application_condition() {
        let e = StreamError::stanza_too_big(10);
        assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
        let app = e.application.as_ref().map(|a| (a.name(), a.namespace()));
        assert_eq!(app, Some(("stanza-too-big", ns::XMPP_ERRORS)));
    }
}

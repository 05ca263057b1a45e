//! Stanza helpers: classification (RFC 6120 §8, RFC 6121), sender stamping and stanza
//! errors (RFC 6120 §8.3).

use std::fmt;

use crate::element::Element;
use crate::ns;

/// `type` of a `<message/>` (RFC 6121 §5.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `normal`, also used for an absent or unknown type (RFC 6121 §5.2.2).
    Normal,
    /// `chat`.
    Chat,
    /// `groupchat`.
    Groupchat,
    /// `headline`.
    Headline,
    /// `error`.
    Error,
}

/// `type` of a `<presence/>` (RFC 6121 §4.7.1); no `type` means available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceType {
    /// No `type`: the sender is available.
    Available,
    /// `unavailable`.
    Unavailable,
    /// `subscribe`.
    Subscribe,
    /// `subscribed`.
    Subscribed,
    /// `unsubscribe`.
    Unsubscribe,
    /// `unsubscribed`.
    Unsubscribed,
    /// `probe`.
    Probe,
    /// `error`.
    Error,
}

/// `type` of an `<iq/>` (RFC 6120 §8.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IqType {
    /// `get`: a request for information.
    Get,
    /// `set`: a request to change something.
    Set,
    /// `result`: a successful response.
    Result,
    /// `error`: a failed response.
    Error,
}

/// What kind of stanza an element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    /// `<message/>`.
    Message(MessageType),
    /// `<presence/>`.
    Presence(PresenceType),
    /// `<iq/>`.
    Iq(IqType),
}

impl StanzaKind {
    /// Whether the stanza has `type='error'` (never answered with another error).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::Message(MessageType::Error)
                | Self::Presence(PresenceType::Error)
                | Self::Iq(IqType::Error)
        )
    }
}

/// Why an element could not be classified as a stanza.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// Not `message`, `presence` or `iq` in `jabber:client`/`jabber:server` (e.g. a
    /// stream-level element such as `<r xmlns='urn:xmpp:sm:3'/>`).
    #[error("not a stanza")]
    NotAStanza,
    /// A stanza violating RFC 6120/6121 rules; answer with the contained error.
    #[error("invalid stanza: {0}")]
    Invalid(StanzaError),
}

/// Whether `element` is a stanza (`message`, `presence`, `iq` in a content namespace).
/// Only stanzas are counted by Stream Management (XEP-0198).
pub fn is_stanza(element: &Element) -> bool {
    (element.namespace() == ns::JABBER_CLIENT || element.namespace() == ns::JABBER_SERVER)
        && matches!(element.name(), "message" | "presence" | "iq")
}

/// Classifies a stanza and checks the type rules of RFC 6120 §8.2.3 and RFC 6121:
/// an `iq` needs an `id` and a known `type`, `get`/`set` carry exactly one payload element
/// and `result` at most one; a `presence` type must be known. An unknown message type is
/// `normal` (RFC 6121 §5.2.2).
pub fn classify(element: &Element) -> Result<StanzaKind, ClassifyError> {
    if !is_stanza(element) {
        return Err(ClassifyError::NotAStanza);
    }
    let ty = element.attr("type");
    let bad = |text: &str| {
        ClassifyError::Invalid(StanzaError::new(StanzaErrorCondition::BadRequest).with_text(text))
    };
    match element.name() {
        "message" => Ok(StanzaKind::Message(match ty {
            Some("chat") => MessageType::Chat,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            Some("error") => MessageType::Error,
            _ => MessageType::Normal,
        })),
        "presence" => Ok(StanzaKind::Presence(match ty {
            None => PresenceType::Available,
            Some("unavailable") => PresenceType::Unavailable,
            Some("subscribe") => PresenceType::Subscribe,
            Some("subscribed") => PresenceType::Subscribed,
            Some("unsubscribe") => PresenceType::Unsubscribe,
            Some("unsubscribed") => PresenceType::Unsubscribed,
            Some("probe") => PresenceType::Probe,
            Some("error") => PresenceType::Error,
            Some(_) => return Err(bad("unknown presence type")),
        })),
        _ => {
            let ty = match ty {
                Some("get") => IqType::Get,
                Some("set") => IqType::Set,
                Some("result") => IqType::Result,
                Some("error") => IqType::Error,
                _ => return Err(bad("iq needs a type of get, set, result or error")),
            };
            if element.attr("id").is_none() {
                return Err(bad("iq needs an id"));
            }
            let payloads = element.children().count();
            match ty {
                IqType::Get | IqType::Set if payloads != 1 => {
                    Err(bad("iq get/set must contain exactly one child element"))
                }
                IqType::Result if payloads > 1 => {
                    Err(bad("iq result must contain at most one child element"))
                }
                _ => Ok(StanzaKind::Iq(ty)),
            }
        }
    }
}

/// Stamps the authenticated sender on a stanza, overwriting whatever `from` the client
/// put there (RFC 6120 §8.1.2.1). Returns the previous value when it differed (a forged
/// or wrong `from` worth logging).
pub fn stamp_from(stanza: &mut Element, from: &str) -> Option<String> {
    let previous = stanza
        .attr("from")
        .filter(|f| *f != from)
        .map(str::to_owned);
    stanza.set_attr("from", from);
    previous
}

/// Error types of RFC 6120 §8.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry: the error cannot be remedied.
    Cancel,
    /// Proceed: the condition was only a warning.
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting: the error is temporary.
    Wait,
}

impl StanzaErrorType {
    /// The attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Cancel => "cancel",
            Self::Continue => "continue",
            Self::Modify => "modify",
            Self::Wait => "wait",
        }
    }
}

impl fmt::Display for StanzaErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The defined stanza error conditions of RFC 6120 §8.3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StanzaErrorCondition {
    /// §8.3.3.1.
    BadRequest,
    /// §8.3.3.2.
    Conflict,
    /// §8.3.3.3.
    FeatureNotImplemented,
    /// §8.3.3.4.
    Forbidden,
    /// §8.3.3.5; may carry the new address (see [`StanzaError::alternate`]).
    Gone,
    /// §8.3.3.6.
    InternalServerError,
    /// §8.3.3.7.
    ItemNotFound,
    /// §8.3.3.8.
    JidMalformed,
    /// §8.3.3.9.
    NotAcceptable,
    /// §8.3.3.10.
    NotAllowed,
    /// §8.3.3.11.
    NotAuthorized,
    /// §8.3.3.12.
    PolicyViolation,
    /// §8.3.3.13.
    RecipientUnavailable,
    /// §8.3.3.14; carries the redirect address (see [`StanzaError::alternate`]).
    Redirect,
    /// §8.3.3.15.
    RegistrationRequired,
    /// §8.3.3.16.
    RemoteServerNotFound,
    /// §8.3.3.17.
    RemoteServerTimeout,
    /// §8.3.3.18.
    ResourceConstraint,
    /// §8.3.3.19.
    ServiceUnavailable,
    /// §8.3.3.20.
    SubscriptionRequired,
    /// §8.3.3.21.
    UndefinedCondition,
    /// §8.3.3.22.
    UnexpectedRequest,
}

impl StanzaErrorCondition {
    /// Every defined condition, in RFC order.
    pub const ALL: [StanzaErrorCondition; 22] = [
        Self::BadRequest,
        Self::Conflict,
        Self::FeatureNotImplemented,
        Self::Forbidden,
        Self::Gone,
        Self::InternalServerError,
        Self::ItemNotFound,
        Self::JidMalformed,
        Self::NotAcceptable,
        Self::NotAllowed,
        Self::NotAuthorized,
        Self::PolicyViolation,
        Self::RecipientUnavailable,
        Self::Redirect,
        Self::RegistrationRequired,
        Self::RemoteServerNotFound,
        Self::RemoteServerTimeout,
        Self::ResourceConstraint,
        Self::ServiceUnavailable,
        Self::SubscriptionRequired,
        Self::UndefinedCondition,
        Self::UnexpectedRequest,
    ];

    /// The element name of the condition.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Conflict => "conflict",
            Self::FeatureNotImplemented => "feature-not-implemented",
            Self::Forbidden => "forbidden",
            Self::Gone => "gone",
            Self::InternalServerError => "internal-server-error",
            Self::ItemNotFound => "item-not-found",
            Self::JidMalformed => "jid-malformed",
            Self::NotAcceptable => "not-acceptable",
            Self::NotAllowed => "not-allowed",
            Self::NotAuthorized => "not-authorized",
            Self::PolicyViolation => "policy-violation",
            Self::RecipientUnavailable => "recipient-unavailable",
            Self::Redirect => "redirect",
            Self::RegistrationRequired => "registration-required",
            Self::RemoteServerNotFound => "remote-server-not-found",
            Self::RemoteServerTimeout => "remote-server-timeout",
            Self::ResourceConstraint => "resource-constraint",
            Self::ServiceUnavailable => "service-unavailable",
            Self::SubscriptionRequired => "subscription-required",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnexpectedRequest => "unexpected-request",
        }
    }

    /// Parses a condition element name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The error type RFC 6120 §8.3.3 gives for this condition.
    pub const fn default_type(self) -> StanzaErrorType {
        use StanzaErrorType::*;
        match self {
            Self::BadRequest
            | Self::JidMalformed
            | Self::NotAcceptable
            | Self::PolicyViolation
            | Self::Redirect => Modify,
            Self::Forbidden
            | Self::NotAuthorized
            | Self::RegistrationRequired
            | Self::SubscriptionRequired => Auth,
            Self::RecipientUnavailable
            | Self::RemoteServerTimeout
            | Self::ResourceConstraint
            | Self::UnexpectedRequest => Wait,
            Self::Conflict
            | Self::FeatureNotImplemented
            | Self::Gone
            | Self::InternalServerError
            | Self::ItemNotFound
            | Self::NotAllowed
            | Self::RemoteServerNotFound
            | Self::ServiceUnavailable
            | Self::UndefinedCondition => Cancel,
        }
    }
}

impl fmt::Display for StanzaErrorCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stanza error (RFC 6120 §8.3): type, defined condition, optional text and extras.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition} ({error_type}){}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StanzaError {
    /// Error type.
    pub error_type: StanzaErrorType,
    /// Defined condition.
    pub condition: StanzaErrorCondition,
    /// Descriptive text.
    pub text: Option<String>,
    /// Language of `text` (`en` when unset).
    pub lang: Option<String>,
    /// `by`: the entity that detected the error.
    pub by: Option<String>,
    /// For `gone` and `redirect`: the XMPP URI of the new address.
    pub alternate: Option<String>,
    /// An application-specific condition element.
    pub application: Option<Box<Element>>,
}

impl StanzaError {
    /// An error with the condition's default type.
    pub fn new(condition: StanzaErrorCondition) -> Self {
        Self {
            error_type: condition.default_type(),
            condition,
            text: None,
            lang: None,
            by: None,
            alternate: None,
            application: None,
        }
    }

    /// Sets the descriptive text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Overrides the error type.
    #[must_use]
    pub fn with_type(mut self, error_type: StanzaErrorType) -> Self {
        self.error_type = error_type;
        self
    }

    /// Sets `by`.
    #[must_use]
    pub fn with_by(mut self, by: impl Into<String>) -> Self {
        self.by = Some(by.into());
        self
    }

    /// The `<error/>` element, in `namespace` (the content namespace of the stanza).
    pub fn to_element(&self, namespace: &str) -> Element {
        let mut error =
            Element::new("error", namespace).with_attr("type", self.error_type.as_str());
        if let Some(by) = &self.by {
            error.set_attr("by", by.as_str());
        }
        let mut condition = Element::new(self.condition.as_str(), ns::XMPP_STANZAS);
        if let Some(alt) = &self.alternate {
            condition.push_text(alt);
        }
        error.push_child(condition);
        if let Some(text) = &self.text {
            let mut t = Element::new("text", ns::XMPP_STANZAS);
            t.set_attr_ns("lang", ns::XML, self.lang.as_deref().unwrap_or("en"));
            t.push_text(text);
            error.push_child(t);
        }
        if let Some(app) = &self.application {
            error.push_child(Element::clone(app));
        }
        error
    }
}

/// Builds the error reply to `original` (RFC 6120 §8.3.1): same element name and
/// namespace, `type='error'`, the same `id`, `to` and `from` swapped, and the `<error/>`
/// child. Returns `None` for an error stanza, which must never be answered with an error.
pub fn error_reply(original: &Element, error: &StanzaError) -> Option<Element> {
    if original.attr("type") == Some("error") {
        return None;
    }
    let mut reply = Element::new(original.name(), original.namespace());
    if let Some(id) = original.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = original.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = original.attr("to") {
        reply.set_attr("from", to);
    }
    reply.set_attr("type", "error");
    reply.push_child(error.to_element(original.namespace()));
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(name: &str) -> Element {
        Element::new(name, ns::JABBER_CLIENT)
    }

    #[test]
    fn classifies_messages() {
        let cases = [
            (None, MessageType::Normal),
            (Some("chat"), MessageType::Chat),
            (Some("groupchat"), MessageType::Groupchat),
            (Some("headline"), MessageType::Headline),
            (Some("error"), MessageType::Error),
            (Some("bogus"), MessageType::Normal),
        ];
        for (ty, expected) in cases {
            let mut m = el("message");
            if let Some(t) = ty {
                m.set_attr("type", t);
            }
            assert_eq!(classify(&m), Ok(StanzaKind::Message(expected)));
        }
    }

    #[test]
    fn classifies_presence() {
        assert_eq!(
            classify(&el("presence")),
            Ok(StanzaKind::Presence(PresenceType::Available))
        );
        for (t, expected) in [
            ("unavailable", PresenceType::Unavailable),
            ("subscribe", PresenceType::Subscribe),
            ("subscribed", PresenceType::Subscribed),
            ("unsubscribe", PresenceType::Unsubscribe),
            ("unsubscribed", PresenceType::Unsubscribed),
            ("probe", PresenceType::Probe),
            ("error", PresenceType::Error),
        ] {
            assert_eq!(
                classify(&el("presence").with_attr("type", t)),
                Ok(StanzaKind::Presence(expected))
            );
        }
        assert!(matches!(
            classify(&el("presence").with_attr("type", "away")),
            Err(ClassifyError::Invalid(e)) if e.condition == StanzaErrorCondition::BadRequest
        ));
    }

    #[test]
    fn classifies_iq() {
        let payload = Element::new("query", "jabber:iq:roster");
        let get = el("iq")
            .with_attr("id", "1")
            .with_attr("type", "get")
            .with_child(payload.clone());
        assert_eq!(classify(&get), Ok(StanzaKind::Iq(IqType::Get)));
        let set = el("iq")
            .with_attr("id", "1")
            .with_attr("type", "set")
            .with_child(payload.clone());
        assert_eq!(classify(&set), Ok(StanzaKind::Iq(IqType::Set)));
        let result = el("iq").with_attr("id", "1").with_attr("type", "result");
        assert_eq!(classify(&result), Ok(StanzaKind::Iq(IqType::Result)));
        let error = el("iq").with_attr("id", "1").with_attr("type", "error");
        assert_eq!(classify(&error), Ok(StanzaKind::Iq(IqType::Error)));
        assert!(StanzaKind::Iq(IqType::Error).is_error());
        assert!(!StanzaKind::Iq(IqType::Get).is_error());

        let invalid = [
            el("iq").with_attr("id", "1").with_child(payload.clone()),
            el("iq")
                .with_attr("id", "1")
                .with_attr("type", "fetch")
                .with_child(payload.clone()),
            el("iq")
                .with_attr("type", "get")
                .with_child(payload.clone()),
            el("iq").with_attr("id", "1").with_attr("type", "get"),
            el("iq")
                .with_attr("id", "1")
                .with_attr("type", "set")
                .with_child(payload.clone())
                .with_child(payload.clone()),
            el("iq")
                .with_attr("id", "1")
                .with_attr("type", "result")
                .with_child(payload.clone())
                .with_child(payload),
        ];
        for iq in invalid {
            assert!(
                matches!(classify(&iq), Err(ClassifyError::Invalid(ref e)) if e.condition == StanzaErrorCondition::BadRequest),
                "{iq}"
            );
        }
    }

    #[test]
    fn non_stanzas() {
        assert_eq!(
            classify(&Element::new("r", ns::STREAM_MANAGEMENT)),
            Err(ClassifyError::NotAStanza)
        );
        assert_eq!(
            classify(&Element::new("message", "urn:other")),
            Err(ClassifyError::NotAStanza)
        );
        assert!(is_stanza(&Element::new("iq", ns::JABBER_SERVER)));
        assert!(!is_stanza(&Element::new("auth", ns::XMPP_SASL)));
    }

    #[test]
    fn stamps_from() {
        let mut m = el("message").with_attr("from", "ceo@example.com");
        assert_eq!(
            stamp_from(&mut m, "intern@example.com/desk").as_deref(),
            Some("ceo@example.com")
        );
        assert_eq!(m.attr("from"), Some("intern@example.com/desk"));
        assert_eq!(m.attributes().len(), 1);
        assert_eq!(stamp_from(&mut m, "intern@example.com/desk"), None);
        let mut p = el("presence");
        assert_eq!(stamp_from(&mut p, "a@b/c"), None);
        assert_eq!(p.attr("from"), Some("a@b/c"));
    }

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let original = el("iq")
            .with_attr("id", "42")
            .with_attr("from", "romeo@example.net/orchard")
            .with_attr("to", "juliet@example.com")
            .with_attr("type", "get")
            .with_child(Element::new("query", "jabber:iq:version"));
        let error = StanzaError::new(StanzaErrorCondition::ServiceUnavailable)
            .with_text("no such service")
            .with_by("example.com");
        let reply = error_reply(&original, &error).unwrap();
        assert_eq!(
            reply.to_xml(),
            "<iq xmlns='jabber:client' id='42' to='romeo@example.net/orchard' \
             from='juliet@example.com' type='error'><error type='cancel' by='example.com'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>no such service</text>\
             </error></iq>"
        );
        let err_stanza = el("message").with_attr("type", "error");
        assert_eq!(error_reply(&err_stanza, &error), None);
    }

    #[test]
    fn error_extras() {
        let mut e =
            StanzaError::new(StanzaErrorCondition::Redirect).with_type(StanzaErrorType::Modify);
        e.alternate = Some("xmpp:room@conference.example.com".into());
        e.application = Some(Box::new(Element::new("stanza-too-big", ns::XMPP_ERRORS)));
        let x = e.to_element(ns::JABBER_CLIENT).to_xml();
        assert_eq!(
            x,
            "<error xmlns='jabber:client' type='modify'><redirect xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>\
             xmpp:room@conference.example.com</redirect><stanza-too-big xmlns='urn:xmpp:errors'/></error>"
        );
        assert_eq!(e.to_string(), "redirect (modify)");
    }

    #[test]
    fn condition_table() {
        for c in StanzaErrorCondition::ALL {
            assert_eq!(StanzaErrorCondition::from_name(c.as_str()), Some(c));
        }
        assert_eq!(
            StanzaErrorCondition::Forbidden.default_type(),
            StanzaErrorType::Auth
        );
        assert_eq!(
            StanzaErrorCondition::ResourceConstraint.default_type(),
            StanzaErrorType::Wait
        );
        assert_eq!(StanzaErrorCondition::from_name("nope"), None);
        assert_eq!(StanzaErrorType::Continue.to_string(), "continue");
    }
}

//! XML namespace names used on XMPP streams.

/// The stream namespace of RFC 6120 (`<stream:stream>`, `<stream:features>`, `<stream:error>`).
pub const STREAMS: &str = "http://etherx.jabber.org/streams";
/// Content namespace of client-to-server streams.
pub const JABBER_CLIENT: &str = "jabber:client";
/// Content namespace of server-to-server streams.
pub const JABBER_SERVER: &str = "jabber:server";
/// Defined conditions of stream errors (RFC 6120 §4.9.3).
pub const XMPP_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Defined conditions of stanza errors (RFC 6120 §8.3.3).
pub const XMPP_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// STARTTLS negotiation (RFC 6120 §5).
pub const XMPP_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL negotiation (RFC 6120 §6).
pub const XMPP_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const XMPP_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment (RFC 3921 §3, kept as an optional feature by RFC 6121 era servers).
pub const XMPP_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// XMPP over WebSocket framing elements `<open/>` and `<close/>` (RFC 7395).
pub const XMPP_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// Stream Management (XEP-0198).
pub const STREAM_MANAGEMENT: &str = "urn:xmpp:sm:3";
/// Client State Indication (XEP-0352).
pub const CSI: &str = "urn:xmpp:csi:0";
/// Stream Limits Advertisement (XEP-0478).
pub const STREAM_LIMITS: &str = "urn:xmpp:stream-limits:0";
/// Application-specific error conditions (XEP-0182), e.g. `<stanza-too-big/>`.
pub const XMPP_ERRORS: &str = "urn:xmpp:errors";
/// The namespace the `xml` prefix is permanently bound to (`xml:lang`).
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";

//! Writers for what a server sends at stream level: the stream header, stream features,
//! stream errors and the end of the stream, for TCP streams (RFC 6120) and WebSocket
//! framing (RFC 7395).
//!
//! Everything is returned as text ready for the transport. On TCP the `stream` prefix is
//! bound by the header, so `<stream:features>` and `<stream:error>` rely on it; on
//! WebSocket every message is a standalone document and declares what it uses.

use crate::element::{Element, escape_attr};
use crate::error::StreamError;
use crate::ns;
use crate::parser::{Framing, StreamVersion};

/// The stream header a responding entity sends (RFC 6120 §4.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// Transport framing.
    pub framing: Framing,
    /// `from`: the served domain.
    pub from: String,
    /// `to`: the initiating entity's `from`, echoed when it sent one.
    pub to: Option<String>,
    /// `id`: a fresh, unpredictable stream id (RFC 6120 §4.7.3).
    pub id: String,
    /// `version`; `None` omits the attribute (pre-1.0 peers).
    pub version: Option<StreamVersion>,
    /// `xml:lang`: the default language of the response stream.
    pub lang: Option<String>,
    /// Content namespace declared as the default namespace (TCP only).
    pub content_namespace: String,
}

impl StreamHeader {
    /// A version 1.0 `jabber:client` header in English.
    pub fn new(framing: Framing, from: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            framing,
            from: from.into(),
            to: None,
            id: id.into(),
            version: Some(StreamVersion::V1_0),
            lang: Some("en".to_owned()),
            content_namespace: ns::JABBER_CLIENT.to_owned(),
        }
    }

    /// Serializes the header: `<?xml?><stream:stream …>` on TCP, `<open …/>` on WebSocket.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        match self.framing {
            Framing::Tcp => {
                out.push_str("<?xml version='1.0'?><stream:stream xmlns='");
                escape_attr(&self.content_namespace, &mut out);
                out.push_str("' xmlns:stream='");
                out.push_str(ns::STREAMS);
                out.push('\'');
            }
            Framing::WebSocket => {
                out.push_str("<open xmlns='");
                out.push_str(ns::XMPP_FRAMING);
                out.push('\'');
            }
        }
        push_attr(&mut out, "id", &self.id);
        push_attr(&mut out, "from", &self.from);
        if let Some(to) = &self.to {
            push_attr(&mut out, "to", to);
        }
        if let Some(v) = self.version {
            push_attr(&mut out, "version", &format!("{}.{}", v.major, v.minor));
        }
        if let Some(lang) = &self.lang {
            push_attr(&mut out, "xml:lang", lang);
        }
        out.push_str(match self.framing {
            Framing::Tcp => ">",
            Framing::WebSocket => "/>",
        });
        out
    }
}

fn push_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("='");
    escape_attr(value, out);
    out.push('\'');
}

/// The end of the stream: `</stream:stream>` or RFC 7395 `<close/>`.
pub fn stream_close(framing: Framing) -> &'static str {
    match framing {
        Framing::Tcp => "</stream:stream>",
        Framing::WebSocket => "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
    }
}

/// The children of `<stream:error>`: the condition, the optional text and the optional
/// application-specific condition (RFC 6120 §4.9.2).
fn stream_error_children(error: &StreamError) -> Vec<Element> {
    let mut condition = Element::new(error.condition.as_str(), ns::XMPP_STREAMS);
    if let Some(host) = &error.other_host {
        condition.push_text(host);
    }
    let mut children = vec![condition];
    if let Some(text) = &error.text {
        let mut t = Element::new("text", ns::XMPP_STREAMS);
        t.set_attr_ns("lang", ns::XML, "en");
        t.push_text(text);
        children.push(t);
    }
    if let Some(app) = &error.application {
        children.push(Element::clone(app));
    }
    children
}

/// The stream error as an element (`<error xmlns='http://etherx.jabber.org/streams'>`).
pub fn stream_error_element(error: &StreamError) -> Element {
    let mut e = Element::new("error", ns::STREAMS);
    for child in stream_error_children(error) {
        e.push_child(child);
    }
    e
}

/// What to send for a stream error, one entry per transport message: on TCP a single
/// string, `<stream:error>…</stream:error></stream:stream>`; on WebSocket the error and
/// then `<close/>`. If the peer's header was never answered, send a [`StreamHeader`]
/// first (RFC 6120 §4.9.1.2).
pub fn stream_error(error: &StreamError, framing: Framing) -> Vec<String> {
    match framing {
        Framing::Tcp => {
            let mut out = String::from("<stream:error>");
            for child in stream_error_children(error) {
                child.write_with(&mut out, Default::default());
            }
            out.push_str("</stream:error>");
            out.push_str(stream_close(framing));
            vec![out]
        }
        Framing::WebSocket => vec![
            stream_error_element(error).to_xml(),
            stream_close(framing).to_owned(),
        ],
    }
}

/// XEP-0478 stream limits advertisement, included in `<stream:features/>`:
/// `<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>…</max-bytes><idle-seconds>…</idle-seconds></limits>`.
pub fn limits_element(max_bytes: Option<usize>, idle_seconds: Option<u64>) -> Element {
    let mut limits = Element::new("limits", ns::STREAM_LIMITS);
    if let Some(n) = max_bytes {
        limits.push_child(Element::new("max-bytes", ns::STREAM_LIMITS).with_text(n.to_string()));
    }
    if let Some(n) = idle_seconds {
        limits.push_child(Element::new("idle-seconds", ns::STREAM_LIMITS).with_text(n.to_string()));
    }
    limits
}

/// Builder of the `<stream:features/>` element (RFC 6120 §4.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    children: Vec<Element>,
}

impl Features {
    /// No features.
    pub fn new() -> Self {
        Self::default()
    }

    /// STARTTLS (RFC 6120 §5.4.1), optionally `<required/>`.
    #[must_use]
    pub fn starttls(self, required: bool) -> Self {
        let mut e = Element::new("starttls", ns::XMPP_TLS);
        if required {
            e.push_child(Element::new("required", ns::XMPP_TLS));
        }
        self.with(e)
    }

    /// SASL mechanisms (RFC 6120 §6.4.1), in order of preference.
    #[must_use]
    pub fn mechanisms<I, S>(self, mechanisms: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut e = Element::new("mechanisms", ns::XMPP_SASL);
        for m in mechanisms {
            e.push_child(Element::new("mechanism", ns::XMPP_SASL).with_text(m));
        }
        self.with(e)
    }

    /// Resource binding (RFC 6120 §7.4).
    #[must_use]
    pub fn bind(self) -> Self {
        self.with(Element::new("bind", ns::XMPP_BIND))
    }

    /// Legacy session establishment marked optional, for old clients that wait for it.
    #[must_use]
    pub fn session_optional(self) -> Self {
        self.with(
            Element::new("session", ns::XMPP_SESSION)
                .with_child(Element::new("optional", ns::XMPP_SESSION)),
        )
    }

    /// Stream Management (XEP-0198).
    #[must_use]
    pub fn stream_management(self) -> Self {
        self.with(Element::new("sm", ns::STREAM_MANAGEMENT))
    }

    /// Client State Indication (XEP-0352).
    #[must_use]
    pub fn csi(self) -> Self {
        self.with(Element::new("csi", ns::CSI))
    }

    /// Stream limits (XEP-0478), see [`limits_element`].
    #[must_use]
    pub fn limits(self, max_bytes: Option<usize>, idle_seconds: Option<u64>) -> Self {
        self.with(limits_element(max_bytes, idle_seconds))
    }

    /// Any other feature element.
    #[must_use]
    pub fn with(mut self, feature: Element) -> Self {
        self.children.push(feature);
        self
    }

    /// The feature elements, in order.
    pub fn elements(&self) -> &[Element] {
        &self.children
    }

    /// The features as an element in the stream namespace.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("features", ns::STREAMS);
        for c in &self.children {
            e.push_child(c.clone());
        }
        e
    }

    /// Serializes `<stream:features>…</stream:features>` (TCP, using the header's `stream`
    /// prefix) or a self-contained `<stream:features xmlns:stream=…>` (WebSocket).
    pub fn to_xml(&self, framing: Framing) -> String {
        let mut out = String::from("<stream:features");
        if framing == Framing::WebSocket {
            out.push_str(" xmlns:stream='");
            out.push_str(ns::STREAMS);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return out;
        }
        out.push('>');
        for c in &self.children {
            c.write_with(&mut out, Default::default());
        }
        out.push_str("</stream:features>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StreamErrorCondition;
    use crate::parser::{ParserConfig, StreamEvent, StreamParser};

    #[test]
    fn tcp_header() {
        let mut h = StreamHeader::new(Framing::Tcp, "example.com", "a1b2");
        h.to = Some("juliet@example.com".into());
        assert_eq!(
            h.to_xml(),
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' id='a1b2' from='example.com' \
             to='juliet@example.com' version='1.0' xml:lang='en'>"
        );
    }

    #[test]
    fn websocket_header_and_close() {
        let h = StreamHeader::new(Framing::WebSocket, "example.com", "x'y");
        assert_eq!(
            h.to_xml(),
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='x&apos;y' \
             from='example.com' version='1.0' xml:lang='en'/>"
        );
        assert_eq!(
            stream_close(Framing::WebSocket),
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
        );
        // The header parses back with the WebSocket parser.
        let mut p = StreamParser::new(ParserConfig::websocket());
        let ev = p.feed_message(h.to_xml().as_bytes()).unwrap();
        match ev.as_slice() {
            [StreamEvent::StreamOpen(o)] => {
                assert_eq!(o.id.as_deref(), Some("x'y"));
                assert_eq!(o.from.as_deref(), Some("example.com"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn features() {
        let f = Features::new()
            .starttls(true)
            .mechanisms(["SCRAM-SHA-256", "SCRAM-SHA-1"])
            .limits(Some(262_144), Some(600));
        assert_eq!(
            f.to_xml(Framing::Tcp),
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
             <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism>\
             <mechanism>SCRAM-SHA-1</mechanism></mechanisms>\
             <limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>262144</max-bytes>\
             <idle-seconds>600</idle-seconds></limits></stream:features>"
        );
        let f = Features::new()
            .bind()
            .session_optional()
            .stream_management()
            .csi();
        let ws = f.to_xml(Framing::WebSocket);
        assert!(ws.starts_with(
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
        ));
        assert_eq!(f.elements().len(), 4);
        assert_eq!(f.to_element().children().count(), 4);
        assert_eq!(Features::new().to_xml(Framing::Tcp), "<stream:features/>");
    }

    #[test]
    fn stream_errors() {
        let e = StreamError::with_text(StreamErrorCondition::RestrictedXml, "no DTDs <here>");
        assert_eq!(
            stream_error(&e, Framing::Tcp),
            vec![
                "<stream:error><restricted-xml xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>no DTDs &lt;here&gt;</text>\
                 </stream:error></stream:stream>"
                    .to_owned()
            ]
        );
        let big = StreamError::stanza_too_big(1024);
        let ws = stream_error(&big, Framing::WebSocket);
        assert_eq!(ws.len(), 2);
        assert!(ws[0].starts_with(
            "<error xmlns='http://etherx.jabber.org/streams'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        ));
        assert!(ws[0].ends_with("<stanza-too-big xmlns='urn:xmpp:errors'/></error>"));
        assert_eq!(ws[1], stream_close(Framing::WebSocket));
        let moved = StreamError::see_other_host("[2001:db8::1]:5222");
        assert!(stream_error(&moved, Framing::Tcp)[0].contains(
            "<see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>[2001:db8::1]:5222</see-other-host>"
        ));
    }

    #[test]
    fn limits() {
        assert_eq!(
            limits_element(Some(10), None).to_xml(),
            "<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>10</max-bytes></limits>"
        );
        assert_eq!(
            limits_element(None, None).to_xml(),
            "<limits xmlns='urn:xmpp:stream-limits:0'/>"
        );
    }
}

//! The incremental, bounded XML stream parser.
//!
//! [`StreamParser`] turns the bytes a peer sends into [`StreamEvent`]s: the stream header,
//! every complete first-level element, and the end of the stream. It accepts input cut at
//! any byte (inside a tag, inside an attribute value, inside a multi-byte UTF-8 sequence)
//! and yields exactly the events the unsliced input would.
//!
//! It speaks the restricted XML profile of RFC 6120 §11: comments, processing instructions
//! (other than the XML declaration at the start of a stream), DTDs and entity references
//! other than the five predefined ones are refused, each with the stream error condition
//! the RFC prescribes. Limits are enforced while bytes arrive, so memory never grows past
//! [`ParserConfig::max_stanza_bytes`] however slowly or in whatever pieces a stanza is sent.
//!
//! Tag boundaries are found with quick-xml's [`ElementParser`] and [`PiParser`] (which
//! skip `>` inside quoted attribute values); attributes and entity references are handled
//! by quick-xml's attribute iterator and unescaper, namespace scopes by
//! [`scope::NamespaceScope`], which keeps an idle stream's declarations in one small
//! allocation.

use quick_xml::XmlVersion;
use quick_xml::escape::{EscapeError, resolve_xml_entity, unescape_with};
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesDecl, BytesStart, BytesText};
use quick_xml::name::QName;
use quick_xml::parser::{ElementParser, Parser, PiParser};
use std::borrow::Cow;
use std::sync::Arc;

use crate::element::Element;
use crate::error::{StreamError, StreamErrorCondition as C};
use crate::ns;
use crate::xmlchar::{first_invalid_char, is_ncname, is_qname, is_xml_space};

mod scope;
use scope::{NamespaceScope, Resolved};

/// How XMPP is framed on the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// One XML document per TCP (or TLS) connection: `<stream:stream>` … `</stream:stream>`
    /// (RFC 6120).
    #[default]
    Tcp,
    /// One complete element per WebSocket message, the stream delimited by `<open/>` and
    /// `<close/>` in the `urn:ietf:params:xml:ns:xmpp-framing` namespace (RFC 7395).
    WebSocket,
}

/// Parser settings and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParserConfig {
    /// Transport framing.
    pub framing: Framing,
    /// Accepted content namespaces (the default namespace of the stream). The first one is
    /// also the namespace of unqualified first-level elements on WebSocket, where there is
    /// no enclosing stream element to declare it.
    pub content_namespaces: Vec<String>,
    /// Namespaces of accepted first-level elements other than stanzas (STARTTLS, SASL,
    /// Stream Management, …). `<error/>` and `<features/>` of the stream namespace are
    /// always accepted; stanzas are `message`, `presence` and `iq` in a content namespace.
    /// Anything else is refused with `unsupported-stanza-type`.
    pub stream_level_namespaces: Vec<String>,
    /// Maximum size in bytes of any first-level element, as advertised with XEP-0478
    /// `max-bytes`. Exceeding it is a `policy-violation`.
    pub max_stanza_bytes: usize,
    /// Maximum size in bytes of the stream header, XML declaration included. Exceeding it
    /// is a `policy-violation`.
    pub max_header_bytes: usize,
    /// Maximum element nesting inside a first-level element (the first-level element
    /// itself is depth 1). Exceeding it is a `policy-violation`. Element trees are
    /// processed recursively (drop, clone, serialization), so keep this modest.
    pub max_depth: usize,
    /// Maximum number of elements in one first-level element (itself included). Together
    /// with the byte limit this bounds the memory of the element tree, which is several
    /// times the input size for element-dense input. Exceeding it is a `policy-violation`.
    pub max_elements: usize,
    /// Maximum number of attributes on one element, namespace declarations included.
    pub max_attributes: usize,
    /// Maximum length in bytes of one raw attribute value.
    pub max_attribute_bytes: usize,
    /// Maximum number of namespace declarations in scope at once.
    pub max_namespace_bindings: usize,
}

/// Default [`ParserConfig::max_stanza_bytes`]: 256 KiB.
pub const DEFAULT_MAX_STANZA_BYTES: usize = 256 * 1024;

impl ParserConfig {
    /// A client-to-server stream (`jabber:client`) over TCP.
    pub fn client() -> Self {
        Self {
            framing: Framing::Tcp,
            content_namespaces: vec![ns::JABBER_CLIENT.to_owned()],
            stream_level_namespaces: vec![
                ns::XMPP_TLS.to_owned(),
                ns::XMPP_SASL.to_owned(),
                ns::STREAM_MANAGEMENT.to_owned(),
                ns::CSI.to_owned(),
            ],
            max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
            max_header_bytes: 4096,
            max_depth: 64,
            max_elements: 8192,
            max_attributes: 64,
            max_attribute_bytes: 16 * 1024,
            max_namespace_bindings: 64,
        }
    }

    /// A client-to-server stream over WebSocket (RFC 7395).
    pub fn websocket() -> Self {
        Self {
            framing: Framing::WebSocket,
            ..Self::client()
        }
    }

    /// A server-to-server stream (`jabber:server`, with dialback) over TCP.
    pub fn server() -> Self {
        let mut c = Self::client();
        c.content_namespaces = vec![ns::JABBER_SERVER.to_owned()];
        c.stream_level_namespaces
            .push("jabber:server:dialback".to_owned());
        c
    }
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self::client()
    }
}

/// The `version` attribute of a stream header (RFC 6120 §4.7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamVersion {
    /// Major version (1 for RFC 6120 streams).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl StreamVersion {
    /// XMPP 1.0.
    pub const V1_0: StreamVersion = StreamVersion { major: 1, minor: 0 };

    /// Parses `major.minor`, ignoring leading zeros.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        // Leading zeros are ignored (RFC 6120 §4.7.5); `parse` accepts them.
        Some(Self {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

/// The attributes of a stream header (`<stream:stream>` or RFC 7395 `<open/>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOpen {
    /// Framing the header was received on.
    pub framing: Framing,
    /// `to`: the domain the peer wants to talk to.
    pub to: Option<String>,
    /// `from`: the address the peer claims (unauthenticated).
    pub from: Option<String>,
    /// `id`: only meaningful on a responding entity's header.
    pub id: Option<String>,
    /// `version`; absent means a pre-1.0 peer.
    pub version: Option<StreamVersion>,
    /// `xml:lang`: the default language of the stream.
    pub lang: Option<String>,
    /// The default (content) namespace declared on the stream element, e.g.
    /// `jabber:client`. On WebSocket this is the configured content namespace.
    pub content_namespace: Option<String>,
    /// The prefix the stream element used for the stream namespace (usually `stream`);
    /// `None` on WebSocket.
    pub stream_prefix: Option<String>,
}

/// What the parser found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer opened (or, on WebSocket, restarted) the stream.
    StreamOpen(StreamOpen),
    /// A complete first-level element: a stanza (`message`, `presence`, `iq`) or a
    /// stream-level element such as `<starttls/>`, `<auth/>` or `<r/>`.
    Stanza(Element),
    /// The peer closed the stream (`</stream:stream>` or `<close/>`).
    StreamClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the stream header.
    Prolog,
    /// Inside the stream.
    Open,
    /// The stream was closed by the peer.
    Closed,
}

#[derive(Debug, Clone, Copy)]
enum Lex {
    /// Very start of the stream: a UTF-8 byte order mark may be skipped.
    Start { bom: u8 },
    /// Character data (or stream-level white space).
    Text,
    /// After `<`.
    Lt,
    /// After `<!`: matching `[CDATA[`.
    Bang { matched: usize },
    /// Inside `<?…?>`.
    Pi(PiParser),
    /// Inside a start tag or an end tag.
    Tag(ElementParser),
    /// Inside `<![CDATA[…]]>`: how many `]` directly precede.
    CData { brackets: u8 },
}

#[derive(Debug)]
struct OpenElement {
    qname: String,
    element: Element,
}

/// Buffers larger than this are released when a first-level element completes, so one
/// big stanza does not pin its buffer's memory for the life of the connection.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Incremental XMPP stream parser (sans-IO): bytes in, [`StreamEvent`]s out.
///
/// Feed it whatever the transport delivers; events are returned as soon as they are
/// complete. After an error the parser is spent: every later call returns the same error,
/// which the caller sends with [`crate::writer::stream_error`] before closing.
///
/// Stream restarts (after STARTTLS and after SASL success, RFC 6120 §5.4.3.3 and
/// §6.4.6) are explicit: call [`StreamParser::reset`] at the point the restart happens.
/// Before a STARTTLS upgrade, the caller must check that the `<starttls/>` element was the
/// last event of its chunk and that [`StreamParser::buffered_bytes`] is zero: anything
/// sent after it in clear text is an injection attempt.
#[derive(Debug)]
pub struct StreamParser {
    config: Arc<ParserConfig>,
    phase: Phase,
    lex: Lex,
    /// Bytes of the markup being read (between `<` and `>`, or CDATA content).
    tok: Vec<u8>,
    /// Raw character data inside the current element, not yet unescaped.
    text: Vec<u8>,
    /// Input bytes of the first-level element (or stream header) in progress.
    cur_bytes: usize,
    stack: Vec<OpenElement>,
    /// Elements started in the first-level element in progress.
    elements: usize,
    /// The stream element's qualified name, to match its end tag (a constant for the usual
    /// `stream:stream`, so an idle stream holds no copy).
    stream_qname: Cow<'static, str>,
    resolver: NamespaceScope,
    decl_allowed: bool,
    /// Boxed: rare, and the parser lives in every idle connection.
    failed: Option<Box<StreamError>>,
}

impl Default for StreamParser {
    fn default() -> Self {
        Self::new(ParserConfig::default())
    }
}

fn err(condition: C, text: impl Into<String>) -> StreamError {
    StreamError::with_text(condition, text)
}

fn attr_error(e: AttrError) -> StreamError {
    err(C::NotWellFormed, format!("malformed attribute: {e}"))
}

fn escape_error(e: &EscapeError) -> StreamError {
    match e {
        EscapeError::UnrecognizedEntity(_, name) if is_ncname(name) => err(
            C::RestrictedXml,
            format!("reference to the undeclared entity '{name}'"),
        ),
        other => err(C::NotWellFormed, format!("bad reference: {other}")),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, StreamError> {
    std::str::from_utf8(bytes).map_err(|_| err(C::UnsupportedEncoding, "input is not valid UTF-8"))
}

fn check_chars(s: &str) -> Result<(), StreamError> {
    match first_invalid_char(s) {
        Some(c) => Err(err(
            C::NotWellFormed,
            format!("character U+{:04X} is not allowed in XML", u32::from(c)),
        )),
        None => Ok(()),
    }
}

impl StreamParser {
    /// A parser waiting for a stream header.
    pub fn new(config: ParserConfig) -> Self {
        Self::with_shared_config(Arc::new(config))
    }

    /// A parser whose configuration is shared with other parsers (a server's streams
    /// all read with the same settings; each would otherwise hold a copy).
    pub fn with_shared_config(config: Arc<ParserConfig>) -> Self {
        let resolver = NamespaceScope::new(config.max_namespace_bindings.max(1));
        let mut parser = Self {
            config,
            phase: Phase::Prolog,
            lex: Lex::Start { bom: 0 },
            tok: Vec::new(),
            text: Vec::new(),
            cur_bytes: 0,
            stack: Vec::new(),
            elements: 0,
            stream_qname: Cow::Borrowed(""),
            resolver,
            decl_allowed: true,
            failed: None,
        };
        parser.install_websocket_default();
        parser
    }

    /// On WebSocket there is no stream element to declare the content namespace; it is
    /// bound at the outermost level so unqualified stanzas resolve to it.
    fn install_websocket_default(&mut self) {
        if self.config.framing == Framing::WebSocket
            && let Some(content) = self.config.content_namespaces.first()
        {
            // Cannot fail: the default namespace is not a reserved binding and the
            // binding limit is at least one.
            let _ = self.resolver.declare(None, content);
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ParserConfig {
        &self.config
    }

    /// Forgets all stream state and waits for a new stream header, as required after
    /// STARTTLS and SASL success. Partial input not yet returned as events is discarded.
    pub fn reset(&mut self) {
        *self = Self::with_shared_config(self.config.clone());
    }

    /// Releases the memory the parser keeps for reuse: its buffers grow to fit the
    /// largest markup, text and nesting seen, and keep that size. Nothing it holds is
    /// lost; a stream that waits for its next stanza can call this so that it waits
    /// without that memory.
    pub fn release_memory(&mut self) {
        self.tok.shrink_to_fit();
        self.text.shrink_to_fit();
        self.stack.shrink_to_fit();
        if self.stack.is_empty() {
            // Only the stream header's declarations are in scope.
            self.resolver.shrink_to_fit();
        }
    }

    /// Input bytes the parser currently retains for the first-level element (or stream
    /// header) in progress, raw or already built into the partial element tree. Never more
    /// than [`ParserConfig::max_stanza_bytes`] (or [`ParserConfig::max_header_bytes`] while
    /// reading the header).
    pub fn buffered_bytes(&self) -> usize {
        self.cur_bytes
    }

    /// Whether the peer's stream header has been received and the stream not closed.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether the peer closed its stream.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The error that stopped the parser, if any.
    pub fn error(&self) -> Option<&StreamError> {
        self.failed.as_deref()
    }

    /// Parses a chunk of input and returns the events it completed.
    ///
    /// On error, events completed earlier in the same chunk are dropped; use
    /// [`StreamParser::feed_into`] to keep them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamEvent>, StreamError> {
        let mut out = Vec::new();
        self.feed_into(bytes, &mut out)?;
        Ok(out)
    }

    /// Parses a chunk of input, appending completed events to `out`. Events completed
    /// before an error stay in `out`.
    pub fn feed_into(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        if let Some(e) = &self.failed {
            return Err(StreamError::clone(e));
        }
        self.run(bytes, out).inspect_err(|e| {
            self.failed = Some(Box::new(e.clone()));
        })
    }

    /// Parses one WebSocket message (RFC 7395 §3.3.3), which must hold complete elements
    /// only and may start with an XML declaration.
    pub fn feed_message(&mut self, message: &[u8]) -> Result<Vec<StreamEvent>, StreamError> {
        if self.failed.is_none() && self.at_stream_level() {
            self.decl_allowed = true;
        }
        let events = self.feed(message)?;
        if !self.at_stream_level() {
            let e = err(
                C::NotWellFormed,
                "a WebSocket message must contain complete XML elements",
            );
            self.failed = Some(Box::new(e.clone()));
            return Err(e);
        }
        Ok(events)
    }

    fn at_stream_level(&self) -> bool {
        matches!(self.lex, Lex::Text | Lex::Start { .. })
            && self.stack.is_empty()
            && self.cur_bytes == 0
    }

    /// Accounts `n` more input bytes to the construct in progress.
    fn consume(&mut self, n: usize) -> Result<(), StreamError> {
        self.cur_bytes = self.cur_bytes.saturating_add(n);
        let header = self.phase == Phase::Prolog && self.config.framing == Framing::Tcp;
        if header && self.cur_bytes > self.config.max_header_bytes {
            return Err(err(
                C::PolicyViolation,
                format!(
                    "stream header exceeds the limit of {} bytes",
                    self.config.max_header_bytes
                ),
            ));
        }
        if !header && self.cur_bytes > self.config.max_stanza_bytes {
            return Err(StreamError::stanza_too_big(self.config.max_stanza_bytes));
        }
        Ok(())
    }

    fn run(&mut self, input: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        let mut i = 0;
        while i < input.len() {
            match self.lex {
                Lex::Start { bom } => {
                    let b = input[i];
                    const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
                    if bom == 0 && b != BOM[0] {
                        if matches!(b, 0x00 | 0xFE | 0xFF) {
                            return Err(err(
                                C::UnsupportedEncoding,
                                "only UTF-8 streams are supported",
                            ));
                        }
                        self.lex = Lex::Text;
                        continue;
                    }
                    if b != BOM[usize::from(bom)] {
                        return Err(err(C::UnsupportedEncoding, "input is not valid UTF-8"));
                    }
                    i += 1;
                    self.lex = if bom == 2 {
                        Lex::Text
                    } else {
                        Lex::Start { bom: bom + 1 }
                    };
                }
                Lex::Text => {
                    let rest = &input[i..];
                    let end = rest.iter().position(|&b| b == b'<');
                    self.char_data(&rest[..end.unwrap_or(rest.len())])?;
                    match end {
                        Some(p) => {
                            i += p + 1;
                            self.begin_markup()?;
                        }
                        None => i = input.len(),
                    }
                }
                Lex::Lt => {
                    let b = input[i];
                    match b {
                        b'/' | b'!' | b'?' => {
                            self.consume(1)?;
                            i += 1;
                        }
                        _ => {}
                    }
                    self.lex = match b {
                        b'/' => {
                            self.tok.push(b'/');
                            Lex::Tag(ElementParser::Outside)
                        }
                        b'!' => Lex::Bang { matched: 0 },
                        b'?' => {
                            if !(self.decl_allowed && self.stack.is_empty()) {
                                return Err(err(
                                    C::RestrictedXml,
                                    "processing instructions are not allowed",
                                ));
                            }
                            Lex::Pi(PiParser::default())
                        }
                        _ => Lex::Tag(ElementParser::Outside),
                    };
                    self.decl_allowed = false;
                }
                Lex::Bang { matched } => {
                    const CDATA: &[u8] = b"[CDATA[";
                    let b = input[i];
                    if matched == 0 && b != b'[' {
                        return Err(err(
                            C::RestrictedXml,
                            match b {
                                b'-' => "comments are not allowed",
                                b'D' => "document type declarations are not allowed",
                                _ => "markup declarations are not allowed",
                            },
                        ));
                    }
                    if CDATA.get(matched) != Some(&b) {
                        return Err(err(C::NotWellFormed, "malformed CDATA section"));
                    }
                    self.consume(1)?;
                    i += 1;
                    if matched + 1 < CDATA.len() {
                        self.lex = Lex::Bang {
                            matched: matched + 1,
                        };
                    } else if self.stack.is_empty() {
                        return Err(err(
                            C::BadFormat,
                            "character data is not allowed at stream level",
                        ));
                    } else {
                        self.lex = Lex::CData { brackets: 0 };
                    }
                }
                Lex::CData { brackets } => {
                    let rest = &input[i..];
                    let mut br = brackets;
                    let mut end = None;
                    for (j, &b) in rest.iter().enumerate() {
                        if b == b'>' && br == 2 {
                            end = Some(j);
                            break;
                        }
                        br = if b == b']' { (br + 1).min(2) } else { 0 };
                    }
                    let take = end.unwrap_or(rest.len());
                    self.consume(take + usize::from(end.is_some()))?;
                    self.tok.extend_from_slice(&rest[..take]);
                    match end {
                        Some(j) => {
                            i += j + 1;
                            self.lex = Lex::Text;
                            self.finish_cdata()?;
                        }
                        None => {
                            i = input.len();
                            self.lex = Lex::CData { brackets: br };
                        }
                    }
                }
                Lex::Pi(mut p) => {
                    let rest = &input[i..];
                    let end = p.feed(rest);
                    let take = end.unwrap_or(rest.len());
                    self.consume(take + usize::from(end.is_some()))?;
                    self.tok.extend_from_slice(&rest[..take]);
                    match end {
                        Some(j) => {
                            i += j + 1;
                            self.lex = Lex::Text;
                            self.finish_decl()?;
                        }
                        None => {
                            i = input.len();
                            self.lex = Lex::Pi(p);
                        }
                    }
                }
                Lex::Tag(mut p) => {
                    let rest = &input[i..];
                    let end = p.feed(rest);
                    let take = end.unwrap_or(rest.len());
                    self.consume(take + usize::from(end.is_some()))?;
                    self.tok.extend_from_slice(&rest[..take]);
                    match end {
                        Some(j) => {
                            i += j + 1;
                            self.lex = Lex::Text;
                            self.finish_tag(out)?;
                        }
                        None => {
                            i = input.len();
                            self.lex = Lex::Tag(p);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Character data between markup.
    fn char_data(&mut self, seg: &[u8]) -> Result<(), StreamError> {
        if seg.is_empty() {
            return Ok(());
        }
        self.decl_allowed = false;
        if !self.stack.is_empty() {
            self.consume(seg.len())?;
            self.text.extend_from_slice(seg);
            return Ok(());
        }
        if seg.iter().all(|&b| is_xml_space(b)) {
            return Ok(());
        }
        Err(match self.phase {
            Phase::Prolog => err(C::NotWellFormed, "data before the stream header"),
            Phase::Open => err(
                C::BadFormat,
                "character data is not allowed at stream level",
            ),
            Phase::Closed => err(C::NotWellFormed, "data after the end of the stream"),
        })
    }

    /// Saw `<`.
    fn begin_markup(&mut self) -> Result<(), StreamError> {
        if self.phase == Phase::Closed {
            return Err(err(C::NotWellFormed, "data after the end of the stream"));
        }
        self.flush_text()?;
        self.tok.clear();
        self.consume(1)?;
        self.lex = Lex::Lt;
        Ok(())
    }

    fn current(&mut self) -> Result<&mut Element, StreamError> {
        match self.stack.last_mut() {
            Some(open) => Ok(&mut open.element),
            None => Err(err(C::InternalServerError, "no open element")),
        }
    }

    fn flush_text(&mut self) -> Result<(), StreamError> {
        if self.text.is_empty() {
            return Ok(());
        }
        let raw = std::mem::take(&mut self.text);
        let s = utf8(&raw)?;
        check_chars(s)?;
        if s.contains("]]>") {
            return Err(err(
                C::NotWellFormed,
                "']]>' is not allowed in character data",
            ));
        }
        let normalized = BytesText::from_escaped(s).xml10_content();
        let unescaped =
            unescape_with(&normalized, resolve_xml_entity).map_err(|e| escape_error(&e))?;
        check_chars(&unescaped)?;
        self.current()?.push_text(&unescaped);
        self.text = raw;
        self.text.clear();
        Ok(())
    }

    fn finish_cdata(&mut self) -> Result<(), StreamError> {
        let tok = std::mem::take(&mut self.tok);
        let content = &tok[..tok.len().saturating_sub(2)];
        let s = utf8(content)?;
        check_chars(s)?;
        let normalized = BytesText::from_escaped(s).xml10_content().into_owned();
        self.current()?.push_text(&normalized);
        self.tok = tok;
        self.tok.clear();
        Ok(())
    }

    /// `<?…?>` at the start of a stream (or of a WebSocket message): only the XML
    /// declaration is allowed.
    fn finish_decl(&mut self) -> Result<(), StreamError> {
        let tok = std::mem::take(&mut self.tok);
        let content = utf8(&tok)?;
        let content = content.strip_suffix('?').unwrap_or(content);
        let is_decl = content.starts_with("xml")
            && content.as_bytes().get(3).is_none_or(|&b| is_xml_space(b));
        if !is_decl {
            return Err(err(
                C::RestrictedXml,
                "processing instructions are not allowed",
            ));
        }
        check_chars(content)?;
        let decl = BytesDecl::from_start(BytesStart::from_content(content, 3));
        let version = decl
            .version()
            .map_err(|e| err(C::NotWellFormed, format!("bad XML declaration: {e}")))?;
        if version != "1.0" {
            return Err(err(
                C::BadFormat,
                format!("XML version {version} is not supported"),
            ));
        }
        if let Some(enc) = decl.encoding() {
            let enc = enc.map_err(attr_error)?;
            if !enc.eq_ignore_ascii_case("UTF-8") {
                return Err(err(
                    C::UnsupportedEncoding,
                    format!("encoding {enc} is not supported"),
                ));
            }
        }
        if self.phase != Phase::Prolog {
            self.cur_bytes = 0;
        }
        self.tok = tok;
        self.tok.clear();
        Ok(())
    }

    fn finish_tag(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        let tok = std::mem::take(&mut self.tok);
        let content = utf8(&tok)?;
        check_chars(content)?;
        if let Some(name) = content.strip_prefix('/') {
            self.end_tag(name, out)?;
        } else {
            match content.strip_suffix('/') {
                Some(c) => self.start_tag(c, true, out)?,
                None => self.start_tag(content, false, out)?,
            }
        }
        self.tok = tok;
        self.tok.clear();
        if self.cur_bytes == 0 {
            self.release_buffers();
        }
        Ok(())
    }

    fn release_buffers(&mut self) {
        if self.tok.capacity() > KEEP_CAPACITY {
            self.tok = Vec::new();
        }
        if self.text.capacity() > KEEP_CAPACITY {
            self.text = Vec::new();
        }
    }

    fn end_tag(&mut self, name: &str, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        let name = name.trim_end_matches(|c: char| c.is_ascii() && is_xml_space(c as u8));
        match self.stack.pop() {
            Some(open) => {
                if open.qname != name {
                    return Err(err(
                        C::NotWellFormed,
                        format!("end tag '{name}' does not match '{}'", open.qname),
                    ));
                }
                self.resolver.pop();
                self.complete(open.element, out)
            }
            None if self.config.framing == Framing::Tcp
                && self.phase == Phase::Open
                && name == self.stream_qname =>
            {
                self.resolver.pop();
                self.phase = Phase::Closed;
                self.cur_bytes = 0;
                out.push(StreamEvent::StreamClose);
                Ok(())
            }
            None => Err(err(
                C::NotWellFormed,
                format!("end tag '{name}' without a matching start tag"),
            )),
        }
    }

    /// An element is complete: attach it to its parent or emit it.
    fn complete(
        &mut self,
        element: Element,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        match self.stack.last_mut() {
            Some(parent) => parent.element.push_child(element),
            None => {
                self.cur_bytes = 0;
                if self.config.framing == Framing::WebSocket
                    && element.namespace() == ns::XMPP_FRAMING
                {
                    return self.framing_element(element, out);
                }
                out.push(StreamEvent::Stanza(element));
            }
        }
        Ok(())
    }

    fn framing_element(
        &mut self,
        element: Element,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        match element.name() {
            "open" => {
                if element.nodes().iter().next().is_some() {
                    return Err(err(C::BadFormat, "<open/> must be empty"));
                }
                let open = self.stream_open(&element, None, None)?;
                self.phase = Phase::Open;
                out.push(StreamEvent::StreamOpen(open));
            }
            "close" => {
                self.phase = Phase::Closed;
                out.push(StreamEvent::StreamClose);
            }
            other => {
                return Err(err(
                    C::UnsupportedStanzaType,
                    format!("unknown framing element '{other}'"),
                ));
            }
        }
        Ok(())
    }

    fn stream_open(
        &self,
        element: &Element,
        content_namespace: Option<String>,
        stream_prefix: Option<String>,
    ) -> Result<StreamOpen, StreamError> {
        let version = match element.attr("version") {
            None => None,
            Some(v) => match StreamVersion::parse(v) {
                Some(version) if version.major <= 1 => Some(version),
                _ => {
                    return Err(err(
                        C::UnsupportedVersion,
                        format!("stream version '{v}' is not supported"),
                    ));
                }
            },
        };
        let content_namespace = match self.config.framing {
            Framing::Tcp => content_namespace,
            Framing::WebSocket => self.config.content_namespaces.first().cloned(),
        };
        Ok(StreamOpen {
            framing: self.config.framing,
            to: element.attr("to").map(str::to_owned),
            from: element.attr("from").map(str::to_owned),
            id: element.attr("id").map(str::to_owned),
            version,
            lang: element.lang().map(str::to_owned),
            content_namespace,
            stream_prefix,
        })
    }

    fn start_tag(
        &mut self,
        content: &str,
        empty: bool,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        let name_len = content
            .bytes()
            .position(is_xml_space)
            .unwrap_or(content.len());
        let qname = &content[..name_len];
        if !is_qname(qname) {
            return Err(err(C::NotWellFormed, "invalid element name"));
        }
        let in_stream = self.config.framing == Framing::Tcp && self.phase != Phase::Prolog;
        let depth = self.stack.len() + 1;
        if depth > self.config.max_depth {
            return Err(err(
                C::PolicyViolation,
                format!("elements nested deeper than {}", self.config.max_depth),
            ));
        }
        if self.phase == Phase::Closed {
            return Err(err(C::NotWellFormed, "data after the end of the stream"));
        }
        self.elements = if self.stack.is_empty() {
            1
        } else {
            self.elements + 1
        };
        if self.elements > self.config.max_elements {
            return Err(err(
                C::PolicyViolation,
                format!(
                    "more than {} elements in one stanza",
                    self.config.max_elements
                ),
            ));
        }

        // Attributes and namespace declarations.
        let start = BytesStart::from_content(content, name_len);
        let mut attrs: Vec<(&str, String)> = Vec::new();
        let mut decls: Vec<(Option<&str>, String)> = Vec::new();
        for (count, a) in start.attributes().enumerate() {
            if count >= self.config.max_attributes {
                return Err(err(
                    C::PolicyViolation,
                    format!("more than {} attributes", self.config.max_attributes),
                ));
            }
            let a = a.map_err(attr_error)?;
            let key = a.key.0;
            if !is_qname(key) {
                return Err(err(C::NotWellFormed, "invalid attribute name"));
            }
            if a.value.len() > self.config.max_attribute_bytes {
                return Err(err(
                    C::PolicyViolation,
                    format!(
                        "attribute value longer than {} bytes",
                        self.config.max_attribute_bytes
                    ),
                ));
            }
            if a.value.contains('<') {
                return Err(err(
                    C::NotWellFormed,
                    "'<' is not allowed in attribute values",
                ));
            }
            let value = a
                .normalized_value_with(XmlVersion::Implicit1_0, 1, resolve_xml_entity)
                .map_err(|e| match e {
                    quick_xml::Error::Escape(e) => escape_error(&e),
                    other => err(C::NotWellFormed, other.to_string()),
                })?;
            check_chars(&value)?;
            let value = value.into_owned();
            if key == "xmlns" {
                decls.push((None, value));
            } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                if value.is_empty() {
                    return Err(err(
                        C::BadNamespacePrefix,
                        format!("prefix '{prefix}' bound to an empty namespace"),
                    ));
                }
                decls.push((Some(prefix), value));
            } else {
                attrs.push((key, value));
            }
        }

        // Open the namespace scope of this element.
        self.resolver.push()?;
        for (prefix, value) in &decls {
            self.resolver.declare(*prefix, value)?;
        }

        let (_, prefix) = QName(qname).decompose();
        if prefix.is_some_and(|p| p.into_inner() == "xmlns") {
            return Err(err(
                C::BadNamespacePrefix,
                "element names cannot use the 'xmlns' prefix",
            ));
        }
        let namespace = self.resolve(qname, true)?.unwrap_or_default();
        let local = QName(qname).local_name().into_inner().to_owned();
        let mut element = Element::new(local, namespace);
        for (key, value) in attrs {
            let namespace = self.resolve(key, false)?;
            let local = QName(key).local_name().into_inner();
            if element
                .attributes()
                .iter()
                .any(|a| a.name == local && a.namespace == namespace)
            {
                return Err(err(
                    C::NotWellFormed,
                    format!("duplicate attribute '{key}'"),
                ));
            }
            match namespace {
                Some(ns) => element.set_attr_ns(local, ns, value),
                None => element.set_attr(local, value),
            }
        }

        if self.stack.is_empty() {
            if self.phase == Phase::Prolog && self.config.framing == Framing::Tcp {
                return self.stream_header(qname, element, empty, out);
            }
            self.check_first_level(&element, in_stream)?;
        }

        if empty {
            self.resolver.pop();
            self.complete(element, out)
        } else {
            self.stack.push(OpenElement {
                qname: qname.to_owned(),
                element,
            });
            Ok(())
        }
    }

    /// Resolves the namespace of an element (`element = true`) or attribute name.
    fn resolve(&self, qname: &str, element: bool) -> Result<Option<String>, StreamError> {
        let prefix = QName(qname).prefix().map(|p| p.into_inner());
        Ok(match self.resolver.resolve(prefix, element)? {
            Resolved::Bound(ns) => Some(ns.to_owned()),
            Resolved::Unbound => None,
        })
    }

    fn stream_header(
        &mut self,
        qname: &str,
        element: Element,
        empty: bool,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        if !element.is("stream", ns::STREAMS) {
            return Err(err(
                C::InvalidNamespace,
                format!(
                    "expected a stream header in namespace '{}', got '{}' in '{}'",
                    ns::STREAMS,
                    element.name(),
                    element.namespace()
                ),
            ));
        }
        // The default namespace in scope is the content namespace; it must not be the
        // stream namespace (RFC 6120 §4.8.2).
        let content_namespace = self.resolve("x", true)?;
        if let Some(content) = &content_namespace
            && (content == ns::STREAMS
                || !self.config.content_namespaces.iter().any(|c| c == content))
        {
            return Err(err(
                C::InvalidNamespace,
                format!("content namespace '{content}' is not supported"),
            ));
        }
        let prefix = QName(qname).prefix().map(|p| p.into_inner().to_owned());
        let open = self.stream_open(&element, content_namespace, prefix)?;
        self.cur_bytes = 0;
        self.stream_qname = match qname {
            "stream:stream" => Cow::Borrowed("stream:stream"),
            other => Cow::Owned(other.to_owned()),
        };
        out.push(StreamEvent::StreamOpen(open));
        if empty {
            self.resolver.pop();
            self.phase = Phase::Closed;
            out.push(StreamEvent::StreamClose);
        } else {
            self.phase = Phase::Open;
        }
        Ok(())
    }

    /// Checks a first-level element as soon as its start tag is read, so an unsupported
    /// element is refused before its content is buffered.
    fn check_first_level(&self, element: &Element, in_stream: bool) -> Result<(), StreamError> {
        let ns = element.namespace();
        let name = element.name();
        if self.config.framing == Framing::WebSocket {
            if ns == ns::XMPP_FRAMING {
                return match name {
                    "open" | "close" => Ok(()),
                    _ => Err(err(
                        C::UnsupportedStanzaType,
                        format!("unknown framing element '{name}'"),
                    )),
                };
            }
            if self.phase == Phase::Prolog {
                return Err(err(
                    C::InvalidNamespace,
                    format!("expected <open xmlns='{}'/>", ns::XMPP_FRAMING),
                ));
            }
        } else if !in_stream {
            return Err(err(C::InvalidNamespace, "expected a stream header"));
        }
        let supported = if self.config.content_namespaces.iter().any(|c| c == ns) {
            matches!(name, "message" | "presence" | "iq")
        } else if ns == ns::STREAMS {
            matches!(name, "error" | "features")
        } else {
            self.config.stream_level_namespaces.iter().any(|c| c == ns)
        };
        if supported {
            Ok(())
        } else {
            Err(err(
                C::UnsupportedStanzaType,
                format!("unsupported first-level element '{name}' in namespace '{ns}'"),
            ))
        }
    }
}

#[cfg(test)]
mod tests;

/// Parses one stanza serialized on its own (a stanza stored on the log), in the
/// `jabber:client` namespace, with the client parser's limits and restrictions. `None`
/// when the text is not exactly one well-formed stanza.
///
/// Processors parse every stanza they read, so each thread keeps a parser that has read
/// the stream header and is reused while it is left between stanzas; after anything
/// else (an error, a stanza left open, the stream closed) it is replaced by a fresh one.
pub fn parse_stanza(xml: &str) -> Option<crate::Element> {
    thread_local! {
        static PRIMED: std::cell::RefCell<Option<StreamParser>> =
            const { std::cell::RefCell::new(None) };
    }
    PRIMED.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            // Not reentrant; a nested call (none today) gets a parser of its own.
            return parse_with(&mut primed_parser()?, xml).0;
        };
        let mut parser = match slot.take() {
            Some(parser) => parser,
            None => primed_parser()?,
        };
        let (stanza, reusable) = parse_with(&mut parser, xml);
        if reusable {
            *slot = Some(parser);
        }
        stanza
    })
}

/// A client parser that has read the stream header.
fn primed_parser() -> Option<StreamParser> {
    let mut parser = StreamParser::new(ParserConfig::client());
    let header = "<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    parser.feed(header.as_bytes()).ok()?;
    Some(parser)
}

/// The one stanza of `xml`, and whether `parser` is back between stanzas (so the next
/// call may use it).
fn parse_with(parser: &mut StreamParser, xml: &str) -> (Option<crate::Element>, bool) {
    let Ok(events) = parser.feed(xml.as_bytes()) else {
        return (None, false);
    };
    let reusable = parser.is_open() && parser.at_stream_level();
    let mut stanzas = events.into_iter().filter_map(|event| match event {
        StreamEvent::Stanza(element) => Some(element),
        _ => None,
    });
    let stanza = stanzas.next();
    let one = stanza.is_some() && stanzas.next().is_none();
    (if one { stanza } else { None }, reusable)
}

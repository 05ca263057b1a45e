//! The XML stream layer of the imbus XMPP gateways, without I/O.
//!
//! Bytes from a client go into a [`StreamParser`], which returns [`StreamEvent`]s: the
//! stream header, each complete first-level element as an owned [`Element`] tree, and the
//! end of the stream. Anything the gateway sends is produced by the [`writer`] functions
//! (stream header, features, stream errors) and by serializing elements. The
//! [`stanza`] module classifies stanzas, stamps the authenticated sender over whatever
//! `from` a client supplied, and builds stanza error replies.
//!
//! The parser enforces RFC 6120's restricted XML (no DTDs, entity declarations or
//! references beyond the predefined five, no comments, no processing instructions), checks
//! encoding and characters, and bounds memory while the bytes arrive: a first-level
//! element larger than [`ParserConfig::max_stanza_bytes`] (the XEP-0478 `max-bytes`) is
//! refused as soon as it passes the limit, however it is sliced. Each violation maps to
//! the RFC 6120 stream error condition it calls for.
//!
//! ```
//! use imbus_xmpp_stream::{ParserConfig, StreamEvent, StreamParser};
//!
//! let mut parser = StreamParser::new(ParserConfig::client());
//! let mut events = parser.feed(b"<?xml version='1.0'?><stream:stream to='example.com' \
//!     xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")?;
//! events.extend(parser.feed(b"<message to='juliet@example.com'><body>hi</bo")?);
//! events.extend(parser.feed(b"dy></message>")?);
//! assert!(matches!(&events[0], StreamEvent::StreamOpen(open) if open.to.as_deref() == Some("example.com")));
//! let StreamEvent::Stanza(message) = &events[1] else { unreachable!() };
//! assert_eq!(message.child("body", "jabber:client").map(|b| b.text()).as_deref(), Some("hi"));
//! # Ok::<(), imbus_xmpp_stream::StreamError>(())
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod element;
pub mod error;
pub mod ns;
pub mod parser;
pub mod stanza;
pub mod writer;
mod xmlchar;

pub use element::{Attribute, Element, Node, WriteOptions};
pub use error::{StreamError, StreamErrorCondition};
pub use parser::{
    DEFAULT_MAX_STANZA_BYTES, Framing, ParserConfig, StreamEvent, StreamOpen, StreamParser,
    StreamVersion, parse_stanza,
};
pub use stanza::{
    ClassifyError, IqType, MessageType, PresenceType, StanzaError, StanzaErrorCondition,
    StanzaErrorType, StanzaKind, classify, error_reply, is_stanza, stamp_from,
};
pub use writer::{Features, StreamHeader, limits_element, stream_close, stream_error};

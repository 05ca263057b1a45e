//! A small owned XML element tree with namespace-resolved names, and its serializer.
//!
//! Elements produced by the [`StreamParser`](crate::StreamParser) are already validated:
//! names are XML names, every prefix has been resolved to its namespace, attribute values
//! and text have been unescaped and normalized. The tree keeps no prefixes: serialization
//! writes canonical XML where every element is in its namespace through a default
//! namespace declaration (`xmlns='…'`) emitted only where the namespace changes, and
//! namespaced attributes get the `xml:` prefix or a generated one.

use std::fmt;

use crate::ns;
use crate::xmlchar::is_xml_char;

/// An attribute: a local name, an optional namespace (unprefixed attributes have none)
/// and an unescaped value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Local name (no prefix).
    pub name: String,
    /// Namespace of a prefixed attribute (e.g. [`ns::XML`] for `xml:lang`); `None` for
    /// unprefixed attributes.
    pub namespace: Option<String>,
    /// The unescaped, normalized value.
    pub value: String,
}

/// A child of an element: another element or a run of character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (unescaped; CDATA sections are folded into text).
    Text(String),
}

/// An XML element with its resolved namespace, attributes and children.
///
/// Names must be XML `NCName`s (the parser guarantees it; code that builds elements uses
/// constant names). Values and text may contain anything: the serializer escapes them and
/// replaces characters XML cannot carry with U+FFFD, so output is always well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: String,
    namespace: String,
    attributes: Vec<Attribute>,
    children: Vec<Node>,
}

/// Options for [`Element::write_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions<'a> {
    /// The default namespace in scope where the element is written, e.g.
    /// `Some("jabber:client")` inside a client stream. The root's `xmlns` is omitted when
    /// it equals this. `None` (a standalone document) always declares it.
    pub inherited_namespace: Option<&'a str>,
    /// Writes this value as the root's `from` attribute, replacing any `from` the element
    /// carries (in place) or adding it (last).
    pub from: Option<&'a str>,
}

impl Element {
    /// A new empty element named `name` in namespace `namespace` (`""` for none).
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            attributes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace name (`""` when the element is in no namespace).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether the element has this local name and namespace.
    pub fn is(&self, name: &str, namespace: &str) -> bool {
        self.name == name && self.namespace == namespace
    }

    /// All attributes, in document order.
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }

    /// The value of the unprefixed attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.namespace.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The value of the attribute `name` in namespace `namespace`.
    pub fn attr_ns(&self, name: &str, namespace: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.namespace.as_deref() == Some(namespace) && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The `xml:lang` attribute of this element (not inherited).
    pub fn lang(&self) -> Option<&str> {
        self.attr_ns("lang", ns::XML)
    }

    /// Sets the unprefixed attribute `name`, replacing its value in place if present.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.set_attr_inner(name.into(), None, value.into());
    }

    /// Sets the attribute `name` in namespace `namespace`.
    pub fn set_attr_ns(
        &mut self,
        name: impl Into<String>,
        namespace: impl Into<String>,
        value: impl Into<String>,
    ) {
        self.set_attr_inner(name.into(), Some(namespace.into()), value.into());
    }

    fn set_attr_inner(&mut self, name: String, namespace: Option<String>, value: String) {
        match self
            .attributes
            .iter_mut()
            .find(|a| a.namespace == namespace && a.name == name)
        {
            Some(a) => a.value = value,
            None => self.attributes.push(Attribute {
                name,
                namespace,
                value,
            }),
        }
    }

    /// Builder form of [`Element::set_attr`].
    #[must_use]
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Removes the unprefixed attribute `name`, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self
            .attributes
            .iter()
            .position(|a| a.namespace.is_none() && a.name == name)?;
        Some(self.attributes.remove(i).value)
    }

    /// All child nodes (elements and text), in document order.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Mutable access to the child nodes.
    pub fn nodes_mut(&mut self) -> &mut Vec<Node> {
        &mut self.children
    }

    /// Child elements, in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn child(&self, name: &str, namespace: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, namespace))
    }

    /// Mutable access to the first child element with this name and namespace.
    pub fn child_mut(&mut self, name: &str, namespace: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, namespace) => Some(e),
            _ => None,
        })
    }

    /// Appends a child element.
    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Builder form of [`Element::push_child`].
    #[must_use]
    pub fn with_child(mut self, child: Element) -> Self {
        self.push_child(child);
        self
    }

    /// Appends character data, merged with a directly preceding text node.
    pub fn push_text(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(t)) => t.push_str(text),
            _ => self.children.push(Node::Text(text.to_owned())),
        }
    }

    /// Builder form of [`Element::push_text`].
    #[must_use]
    pub fn with_text(mut self, text: impl AsRef<str>) -> Self {
        self.push_text(text);
        self
    }

    /// The concatenated character data directly inside this element.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Serializes as a standalone fragment: the root always declares its namespace.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_with(&mut out, WriteOptions::default());
        out
    }

    /// Serializes for a stream whose default (content) namespace is `namespace`: the root
    /// omits `xmlns` when it is in that namespace.
    pub fn to_xml_in(&self, namespace: &str) -> String {
        let mut out = String::new();
        self.write_with(
            &mut out,
            WriteOptions {
                inherited_namespace: Some(namespace),
                from: None,
            },
        );
        out
    }

    /// Appends the serialization of this element to `out`.
    pub fn write_with(&self, out: &mut String, options: WriteOptions<'_>) {
        self.write_element(out, options.inherited_namespace, options.from);
    }

    fn write_element(&self, out: &mut String, inherited: Option<&str>, from: Option<&str>) {
        out.push('<');
        out.push_str(&self.name);
        match inherited {
            Some(ns) if ns == self.namespace => {}
            None if self.namespace.is_empty() => {}
            _ => {
                out.push_str(" xmlns='");
                escape_attr(&self.namespace, out);
                out.push('\'');
            }
        }
        // Prefixes for namespaced attributes other than xml:*, declared on this element.
        let mut prefixes: Vec<&str> = Vec::new();
        for a in &self.attributes {
            if let Some(ans) = a.namespace.as_deref()
                && ans != ns::XML
                && !prefixes.contains(&ans)
            {
                prefixes.push(ans);
                out.push_str(" xmlns:ns");
                out.push_str(&prefixes.len().to_string());
                out.push_str("='");
                escape_attr(ans, out);
                out.push('\'');
            }
        }
        let mut from_written = false;
        for a in &self.attributes {
            let is_from = a.namespace.is_none() && a.name == "from";
            if is_from && from.is_some() && from_written {
                // A duplicate cannot come from the parser; never write two.
                continue;
            }
            out.push(' ');
            match a.namespace.as_deref() {
                None => {}
                Some(ns::XML) => out.push_str("xml:"),
                Some(ans) => {
                    let k = prefixes.iter().position(|p| *p == ans).unwrap_or(0) + 1;
                    out.push_str("ns");
                    out.push_str(&k.to_string());
                    out.push(':');
                }
            }
            out.push_str(&a.name);
            out.push_str("='");
            let value = match from {
                Some(f) if is_from => {
                    from_written = true;
                    f
                }
                _ => &a.value,
            };
            escape_attr(value, out);
            out.push('\'');
        }
        if let (Some(f), false) = (from, from_written) {
            out.push_str(" from='");
            escape_attr(f, out);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_element(out, Some(&self.namespace), None),
                Node::Text(t) => escape_text(t, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_xml())
    }
}

/// Escapes character data: `&`, `<`, `>` and `\r` (which line-end normalization would
/// otherwise turn into `\n`); characters XML cannot carry become U+FFFD.
pub fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// Escapes an attribute value for either quote style. Tab, line feed and carriage return
/// are written as character references so attribute-value normalization on the reading
/// side returns them unchanged (quick-xml's `escape` leaves them literal, which a reader
/// would turn into spaces). Characters XML cannot carry become U+FFFD.
pub fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Element {
        Element::new("message", ns::JABBER_CLIENT)
            .with_attr("to", "juliet@example.com")
            .with_attr("type", "chat")
            .with_child(Element::new("body", ns::JABBER_CLIENT).with_text("a < b & c > 'd' \"e\""))
    }

    #[test]
    fn serializes_with_namespace_only_where_it_changes() {
        let mut m = message();
        m.push_child(Element::new(
            "active",
            "http://jabber.org/protocol/chatstates",
        ));
        assert_eq!(
            m.to_xml(),
            "<message xmlns='jabber:client' to='juliet@example.com' type='chat'>\
             <body>a &lt; b &amp; c &gt; 'd' \"e\"</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );
        assert!(m.to_xml_in(ns::JABBER_CLIENT).starts_with("<message to="));
    }

    #[test]
    fn escapes_attributes_and_whitespace() {
        let e = Element::new("x", "").with_attr("a", "'\"<>&\t\n\r");
        assert_eq!(
            e.to_xml(),
            "<x a='&apos;&quot;&lt;&gt;&amp;&#x9;&#xA;&#xD;'/>"
        );
        let t = Element::new("x", "").with_text("l1\r\nl2");
        assert_eq!(t.to_xml(), "<x>l1&#xD;\nl2</x>");
    }

    #[test]
    fn invalid_characters_are_replaced() {
        let e = Element::new("x", "")
            .with_attr("a", "\u{1}")
            .with_text("\u{0}ok\u{FFFF}");
        assert_eq!(e.to_xml(), "<x a='\u{FFFD}'>\u{FFFD}ok\u{FFFD}</x>");
    }

    #[test]
    fn unnamespaced_child_undeclares_default() {
        let e = Element::new("a", "urn:x").with_child(Element::new("b", ""));
        assert_eq!(e.to_xml(), "<a xmlns='urn:x'><b xmlns=''/></a>");
    }

    #[test]
    fn namespaced_attributes_get_prefixes() {
        let mut e = Element::new("a", "urn:x");
        e.set_attr_ns("lang", ns::XML, "en");
        e.set_attr_ns("k", "urn:y", "1");
        e.set_attr_ns("j", "urn:y", "2");
        e.set_attr_ns("m", "urn:z", "3");
        assert_eq!(
            e.to_xml(),
            "<a xmlns='urn:x' xmlns:ns1='urn:y' xmlns:ns2='urn:z' xml:lang='en' ns1:k='1' ns1:j='2' ns2:m='3'/>"
        );
        assert_eq!(e.lang(), Some("en"));
        assert_eq!(e.attr_ns("m", "urn:z"), Some("3"));
    }

    #[test]
    fn from_is_rewritten_or_inserted() {
        let mut m = message();
        m.set_attr("from", "mallory@evil.example");
        let mut out = String::new();
        m.write_with(
            &mut out,
            WriteOptions {
                inherited_namespace: Some(ns::JABBER_CLIENT),
                from: Some("romeo@example.net/orchard"),
            },
        );
        assert!(out.starts_with(
            "<message to='juliet@example.com' type='chat' from='romeo@example.net/orchard'>"
        ));
        assert!(!out.contains("mallory"));

        let m = message();
        let mut out = String::new();
        m.write_with(
            &mut out,
            WriteOptions {
                inherited_namespace: None,
                from: Some("a@b/c"),
            },
        );
        assert!(out.starts_with(
            "<message xmlns='jabber:client' to='juliet@example.com' type='chat' from='a@b/c'>"
        ));
    }

    #[test]
    fn attribute_and_child_accessors() {
        let mut m = message();
        assert_eq!(m.attr("type"), Some("chat"));
        m.set_attr("type", "normal");
        assert_eq!(m.attr("type"), Some("normal"));
        assert_eq!(m.attributes().len(), 2);
        assert_eq!(m.remove_attr("type").as_deref(), Some("normal"));
        assert_eq!(m.attr("type"), None);
        assert_eq!(
            m.child("body", ns::JABBER_CLIENT)
                .map(Element::text)
                .as_deref(),
            Some("a < b & c > 'd' \"e\"")
        );
        if let Some(b) = m.child_mut("body", ns::JABBER_CLIENT) {
            b.push_text("!");
        }
        assert_eq!(
            m.child("body", ns::JABBER_CLIENT).map(|b| b.nodes().len()),
            Some(1)
        );
        assert!(m.child("body", "other").is_none());
        assert_eq!(m.children().count(), 1);
    }
}

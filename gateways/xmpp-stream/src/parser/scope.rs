//! Namespace scopes (Namespaces in XML 1.0 §§3–6): which prefix is bound to which
//! namespace at the current depth of a stream.
//!
//! Every stream holds one scope for its whole life, so it is kept small: it stores only
//! the declarations the peer made (the permanent `xml` and `xmlns` bindings are built in),
//! and a namespace or prefix that streams declare all the time (`jabber:client`, the
//! stream namespace, the `stream` prefix, …) is a reference to a constant instead of a
//! copy. An idle client stream's scope is one allocation holding two such references.

use std::borrow::Cow;

use crate::error::{StreamError, StreamErrorCondition as C};
use crate::ns;

/// The namespace the `xmlns` prefix is permanently bound to.
const XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// Names declared so often that a scope refers to these constants instead of copying them.
const COMMON: &[&str] = &[
    ns::JABBER_CLIENT,
    ns::STREAMS,
    "stream",
    ns::JABBER_SERVER,
    ns::XMPP_FRAMING,
    ns::XMPP_STANZAS,
    ns::XMPP_STREAMS,
    ns::XMPP_SASL,
    ns::XMPP_TLS,
    ns::XMPP_BIND,
    ns::STREAM_MANAGEMENT,
];

fn name(s: &str) -> Cow<'static, str> {
    match COMMON.iter().find(|c| **c == s) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(s.to_owned()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    /// The element depth that declared it (1 for the outermost element).
    level: u16,
    /// `None` for the default namespace.
    prefix: Option<Cow<'static, str>>,
    /// Empty for `xmlns=""` (no default namespace).
    namespace: Cow<'static, str>,
}

/// How a name resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved<'a> {
    /// In this namespace.
    Bound(&'a str),
    /// In no namespace (an unprefixed attribute, or an unprefixed element with no
    /// default namespace in scope).
    Unbound,
}

/// The namespace declarations in scope, innermost last.
#[derive(Debug, Clone, Default)]
pub(crate) struct NamespaceScope {
    bindings: Vec<Binding>,
    level: u16,
    max_bindings: usize,
}

impl NamespaceScope {
    /// An empty scope that refuses more than `max_bindings` declarations in scope at once.
    pub(crate) fn new(max_bindings: usize) -> Self {
        Self {
            bindings: Vec::new(),
            level: 0,
            max_bindings,
        }
    }

    /// The depth of the innermost open element (0 outside any element).
    #[cfg(test)]
    pub(crate) fn level(&self) -> u16 {
        self.level
    }

    /// Opens the scope of a child element.
    pub(crate) fn push(&mut self) -> Result<(), StreamError> {
        self.level = self.level.checked_add(1).ok_or_else(|| {
            StreamError::with_text(C::PolicyViolation, "elements nested too deeply")
        })?;
        Ok(())
    }

    /// Closes the innermost element's scope and forgets its declarations.
    pub(crate) fn pop(&mut self) {
        self.level = self.level.saturating_sub(1);
        while self.bindings.last().is_some_and(|b| b.level > self.level) {
            self.bindings.pop();
        }
    }

    /// Adds a declaration of the innermost element: `prefix` `None` declares the default
    /// namespace. The caller has refused `xmlns:p=""` already (Namespaces in XML 1.0 does
    /// not allow undeclaring a prefix).
    pub(crate) fn declare(
        &mut self,
        prefix: Option<&str>,
        namespace: &str,
    ) -> Result<(), StreamError> {
        let refused = |text: String| Err(StreamError::with_text(C::BadNamespacePrefix, text));
        match prefix {
            Some("xml") if namespace == ns::XML => return Ok(()),
            Some("xml") => {
                return refused(format!("the prefix 'xml' cannot be bound to '{namespace}'"));
            }
            Some("xmlns") => {
                return refused("the prefix 'xmlns' cannot be declared".to_owned());
            }
            Some(p) if namespace == ns::XML || namespace == XMLNS => {
                return refused(format!("the prefix '{p}' cannot be bound to '{namespace}'"));
            }
            None if namespace == ns::XML || namespace == XMLNS => {
                return refused(format!("'{namespace}' cannot be the default namespace"));
            }
            _ => {}
        }
        if self.bindings.len() >= self.max_bindings {
            return Err(StreamError::with_text(
                C::PolicyViolation,
                format!(
                    "more than {} namespace declarations in scope",
                    self.max_bindings
                ),
            ));
        }
        self.bindings.push(Binding {
            level: self.level,
            prefix: prefix.map(name),
            namespace: name(namespace),
        });
        Ok(())
    }

    /// Resolves the prefix of a qualified name (`None` when it has none) for an element
    /// (`element = true`, the default namespace applies) or an attribute.
    pub(crate) fn resolve(
        &self,
        prefix: Option<&str>,
        element: bool,
    ) -> Result<Resolved<'_>, StreamError> {
        match prefix {
            None if !element => Ok(Resolved::Unbound),
            None => Ok(
                match self.bindings.iter().rev().find(|b| b.prefix.is_none()) {
                    Some(b) if !b.namespace.is_empty() => Resolved::Bound(&b.namespace),
                    _ => Resolved::Unbound,
                },
            ),
            Some("xml") => Ok(Resolved::Bound(ns::XML)),
            Some("xmlns") => Ok(Resolved::Bound(XMLNS)),
            Some(p) => self
                .bindings
                .iter()
                .rev()
                .find(|b| b.prefix.as_deref() == Some(p))
                .map(|b| Resolved::Bound(&b.namespace))
                .ok_or_else(|| {
                    StreamError::with_text(
                        C::BadNamespacePrefix,
                        format!("undeclared namespace prefix '{p}'"),
                    )
                }),
        }
    }

    /// Gives back memory kept from deeper scopes that are closed now.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.bindings.shrink_to_fit();
    }

    /// Heap bytes the scope holds (for tests of the parser's memory).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        let owned = |c: &Cow<'static, str>| match c {
            Cow::Borrowed(_) => 0,
            Cow::Owned(s) => s.capacity(),
        };
        self.bindings.capacity() * std::mem::size_of::<Binding>()
            + self
                .bindings
                .iter()
                .map(|b| owned(&b.namespace) + b.prefix.as_ref().map_or(0, owned))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_end_with_their_element() {
        let mut s = NamespaceScope::new(8);
        s.push().unwrap();
        s.declare(None, ns::JABBER_CLIENT).unwrap();
        s.declare(Some("stream"), ns::STREAMS).unwrap();
        s.push().unwrap();
        s.declare(None, "urn:x").unwrap();
        s.declare(Some("stream"), "urn:y").unwrap();
        assert_eq!(s.resolve(None, true).unwrap(), Resolved::Bound("urn:x"));
        assert_eq!(
            s.resolve(Some("stream"), true).unwrap(),
            Resolved::Bound("urn:y")
        );
        assert_eq!(s.resolve(None, false).unwrap(), Resolved::Unbound);
        s.pop();
        assert_eq!(s.level(), 1);
        assert_eq!(
            s.resolve(None, true).unwrap(),
            Resolved::Bound(ns::JABBER_CLIENT)
        );
        assert_eq!(
            s.resolve(Some("stream"), false).unwrap(),
            Resolved::Bound(ns::STREAMS)
        );
        s.pop();
        assert_eq!(s.resolve(None, true).unwrap(), Resolved::Unbound);
        assert_eq!(
            s.resolve(Some("stream"), true).unwrap_err().condition,
            C::BadNamespacePrefix
        );
    }

    #[test]
    fn empty_default_namespace_undeclares_it() {
        let mut s = NamespaceScope::new(8);
        s.push().unwrap();
        s.declare(None, "urn:x").unwrap();
        s.push().unwrap();
        s.declare(None, "").unwrap();
        assert_eq!(s.resolve(None, true).unwrap(), Resolved::Unbound);
        s.pop();
        assert_eq!(s.resolve(None, true).unwrap(), Resolved::Bound("urn:x"));
    }

    #[test]
    fn reserved_prefixes_and_namespaces() {
        let mut s = NamespaceScope::new(8);
        s.push().unwrap();
        assert_eq!(
            s.resolve(Some("xml"), false).unwrap(),
            Resolved::Bound(ns::XML)
        );
        s.declare(Some("xml"), ns::XML).unwrap();
        for (prefix, namespace) in [
            (Some("xml"), "urn:x"),
            (Some("xmlns"), "urn:x"),
            (Some("p"), ns::XML),
            (Some("p"), XMLNS),
            (None, ns::XML),
            (None, XMLNS),
        ] {
            let e = s.declare(prefix, namespace).unwrap_err();
            assert_eq!(e.condition, C::BadNamespacePrefix, "{prefix:?} {namespace}");
        }
        assert_eq!(s.heap_bytes(), 0, "the reserved bindings are built in");
    }

    #[test]
    fn bounded_number_of_declarations() {
        let mut s = NamespaceScope::new(2);
        s.push().unwrap();
        s.declare(Some("a"), "urn:a").unwrap();
        s.declare(Some("b"), "urn:b").unwrap();
        let e = s.declare(Some("c"), "urn:c").unwrap_err();
        assert_eq!(e.condition, C::PolicyViolation);
        s.pop();
        s.push().unwrap();
        s.declare(Some("c"), "urn:c").unwrap();
    }

    #[test]
    fn common_names_are_not_copied() {
        let mut s = NamespaceScope::new(8);
        s.push().unwrap();
        s.declare(None, ns::JABBER_CLIENT).unwrap();
        s.declare(Some("stream"), ns::STREAMS).unwrap();
        s.shrink_to_fit();
        assert_eq!(s.heap_bytes(), 2 * std::mem::size_of::<Binding>());
        s.declare(Some("p"), "urn:example").unwrap();
        assert!(s.heap_bytes() > 3 * std::mem::size_of::<Binding>());
    }
}

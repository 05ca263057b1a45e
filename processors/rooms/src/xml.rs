//! Small builders for the stanzas and payloads the rooms service writes.

use std::collections::BTreeMap;

use imbus_core::Timestamp;
use imbus_xmpp_stream::{Element, ns, parse_stanza};

pub const NS_CLIENT: &str = ns::JABBER_CLIENT;
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const NS_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const NS_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
pub const NS_DATA: &str = "jabber:x:data";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
pub const NS_SEARCH: &str = "jabber:iq:search";
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0359 unique and stable stanza ids (the room's archive id of a message).
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub use imbus_archive::NS_MAM;

/// An element with text content.
pub fn text_el(name: &str, namespace: &str, text: impl AsRef<str>) -> Element {
    Element::new(name, namespace).with_text(text)
}

/// The `result` answer to an IQ request.
pub fn iq_result(request: &Element, to: &str) -> Element {
    let mut result = Element::new("iq", NS_CLIENT)
        .with_attr("type", "result")
        .with_attr("to", to);
    if let Some(id) = request.attr("id") {
        result.set_attr("id", id);
    }
    if let Some(from) = request.attr("to") {
        result.set_attr("from", from);
    }
    result
}

/// A data form (XEP-0004) of `kind` (`form`, `result`) with its hidden `FORM_TYPE`.
pub fn form(kind: &str, form_type: &str) -> Element {
    Element::new("x", NS_DATA)
        .with_attr("type", kind)
        .with_child(field("FORM_TYPE", "hidden", None, [form_type]))
}

/// A data form field.
pub fn field<I, S>(var: &str, kind: &str, label: Option<&str>, values: I) -> Element
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut field = Element::new("field", NS_DATA).with_attr("var", var);
    if !kind.is_empty() {
        field.set_attr("type", kind);
    }
    if let Some(label) = label {
        field.set_attr("label", label);
    }
    for value in values {
        field.push_child(text_el("value", NS_DATA, value));
    }
    field
}

/// A `list-single` field with its options.
pub fn list_field(var: &str, label: &str, value: &str, options: &[(&str, &str)]) -> Element {
    let mut field = field(var, "list-single", Some(label), [value]);
    for (label, value) in options {
        field.push_child(
            Element::new("option", NS_DATA)
                .with_attr("label", *label)
                .with_child(text_el("value", NS_DATA, value)),
        );
    }
    field
}

/// The values of a submitted data form, by field name.
pub fn submitted(form: &Element) -> BTreeMap<String, Vec<String>> {
    form.children()
        .filter(|f| f.is("field", NS_DATA))
        .filter_map(|f| {
            let var = f.attr("var")?;
            let values = f
                .children()
                .filter(|v| v.is("value", NS_DATA))
                .map(Element::text)
                .collect();
            Some((var.to_owned(), values))
        })
        .collect()
}

/// Serializes the children of a stanza (other than those `skip` rejects) for storage.
pub fn children_xml(element: &Element, skip: impl Fn(&Element) -> bool) -> String {
    element
        .children()
        .filter(|c| !skip(c))
        .map(|c| c.to_xml_in(NS_CLIENT))
        .collect()
}

/// Parses children stored by [`children_xml`].
pub fn parse_children(xml: &str) -> Vec<Element> {
    if xml.is_empty() {
        return Vec::new();
    }
    parse_stanza(&format!("<presence xmlns='jabber:client'>{xml}</presence>"))
        .map(|p| p.children().cloned().collect())
        .unwrap_or_default()
}

/// Parses a XEP-0082 date-time (`2002-10-13T23:58:37Z`, fractions and offsets allowed).
pub fn parse_datetime(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5)? != "-" || s.get(7..8)? != "-" || s.get(10..11)? != "T" {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits: String = fraction.chars().take_while(char::is_ascii_digit).collect();
        let padded: String = digits.chars().chain("000000".chars()).take(6).collect();
        micros = padded.parse().ok()?;
        rest = fraction.get(digits.len()..)?;
    }
    let offset = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(Timestamp::from_micros(secs * 1_000_000 + micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xep_0082_datetimes_back_to_timestamps() {
        let t = Timestamp::from_micros(951_827_696_789_000);
        assert_eq!(parse_datetime(&t.to_rfc3339()), Some(t));
        assert_eq!(
            parse_datetime("1970-01-01T01:00:00+01:00"),
            Some(Timestamp::EPOCH)
        );
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(parse_datetime("1970-13-01T00:00:00Z"), None);
    }
}

//! Character and name productions of XML 1.0 (fifth edition) and XML namespaces.

/// `Char` production: characters allowed anywhere in an XML 1.0 document.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Returns the first character of `s` that is not an XML `Char`, if any.
///
/// Works on bytes: only C0 controls and U+FFFE/U+FFFF can be invalid in a Rust string
/// (surrogates cannot be encoded in valid UTF-8).
pub(crate) fn first_invalid_char(s: &str) -> Option<char> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let x = b[i];
        if x < 0x20 && x != b'\t' && x != b'\n' && x != b'\r' {
            return Some(char::from(x));
        }
        if x == 0xEF
            && i + 2 < b.len()
            && b[i + 1] == 0xBF
            && (b[i + 2] == 0xBE || b[i + 2] == 0xBF)
        {
            return Some(if b[i + 2] == 0xBE {
                '\u{FFFE}'
            } else {
                '\u{FFFF}'
            });
        }
        i += 1;
    }
    None
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// `NCName` of XML namespaces: a `Name` without colons.
pub(crate) fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c != ':' && is_name_start_char(c) => chars.all(|c| c != ':' && is_name_char(c)),
        _ => false,
    }
}

/// `QName` of XML namespaces: `NCName` or `NCName:NCName`.
pub(crate) fn is_qname(s: &str) -> bool {
    match s.split_once(':') {
        Some((prefix, local)) => is_ncname(prefix) && is_ncname(local),
        None => is_ncname(s),
    }
}

/// XML white space (`S` production).
pub(crate) fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars() {
        assert!(is_xml_char('a'));
        assert!(is_xml_char('\n'));
        assert!(is_xml_char('😀'));
        assert!(!is_xml_char('\u{0}'));
        assert!(!is_xml_char('\u{1B}'));
        assert!(!is_xml_char('\u{FFFE}'));
        assert_eq!(first_invalid_char("ok\u{1}"), Some('\u{1}'));
        assert_eq!(first_invalid_char("ok\u{FFFF}x"), Some('\u{FFFF}'));
        assert_eq!(first_invalid_char("ok\u{FFFD}\t\r\n😀"), None);
    }

    #[test]
    fn names() {
        assert!(is_qname("stream:stream"));
        assert!(is_qname("iq"));
        assert!(is_qname("x-y.z_1"));
        assert!(is_qname("é"));
        assert!(!is_qname(""));
        assert!(!is_qname("1a"));
        assert!(!is_qname("a:b:c"));
        assert!(!is_qname(":a"));
        assert!(!is_qname("a:"));
        assert!(!is_qname("a b"));
        assert!(!is_qname("a<"));
        assert!(is_ncname("a"));
        assert!(!is_ncname("a:b"));
    }
}

use jid::BareJid;

use crate::Timestamp;

/// The new state of one piece of XML the server stores on an account's behalf (topic
/// `userdata`): the account's vCard (XEP-0054, namespace `vcard-temp`), private XML
/// storage (XEP-0049) or its block list (XEP-0191).
///
/// The event carries the whole stored element, so the latest event per (user, namespace)
/// is what is stored; `xml: None` means it was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDataChanged {
    /// The account the data belongs to.
    pub user: BareJid,
    /// The XML namespace of the stored element, e.g. `vcard-temp`; names the item.
    pub namespace: String,
    /// The stored element as UTF-8 XML, or `None` if it was removed.
    pub xml: Option<String>,
    /// When the data changed.
    pub at: Timestamp,
}

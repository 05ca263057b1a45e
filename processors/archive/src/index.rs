//! The per-user index of the archive: what a query needs to select messages (archive id,
//! time, the other party) and where each message is on the log (its offset). Message
//! bodies stay on the log.

use std::collections::HashMap;

use imbus_core::{ArchivedMessage, BareJid, ToBare, Uuid};
use imbus_log::Offset;

/// One archived message as the index knows it (about 48 bytes, plus its id in the
/// per-user id map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The archive id (the XEP-0313 result id).
    pub id: Uuid,
    /// Where the `ArchivedMessage` record is in the owner's `archive` partition.
    pub offset: Offset,
    /// When the server accepted the message, in milliseconds since the epoch (the
    /// precision of the delay stamps the archive hands out).
    pub millis: i64,
    /// The other party as recorded (full or bare JID), an index into the peer table.
    pub with: u32,
    /// The bare JID of the other party, an index into the peer table.
    pub with_bare: u32,
}

/// One user's archive: its messages in log order.
#[derive(Debug, Default)]
pub struct UserArchive {
    entries: Vec<Entry>,
    /// Archive id → sequence number (the position of `entries[0]` is `base`).
    by_id: HashMap<Uuid, u64>,
    base: u64,
    peers: Vec<Box<str>>,
    peer_ids: HashMap<Box<str>, u32>,
}

impl UserArchive {
    fn peer(&mut self, jid: &str) -> u32 {
        if let Some(&id) = self.peer_ids.get(jid) {
            return id;
        }
        let id = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
        self.peers.push(jid.into());
        self.peer_ids.insert(jid.into(), id);
        id
    }

    /// The index of a JID in the peer table, if any message involves it.
    pub fn peer_id(&self, jid: &str) -> Option<u32> {
        self.peer_ids.get(jid).copied()
    }

    /// The messages, in log order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The position in [`Self::entries`] of the message with this archive id.
    pub fn position(&self, id: &Uuid) -> Option<usize> {
        let seq = *self.by_id.get(id)?;
        usize::try_from(seq.checked_sub(self.base)?).ok()
    }

    /// Forgets the messages whose records are below `low` (removed by retention).
    fn prune(&mut self, low: Offset) {
        let gone = self.entries.partition_point(|e| e.offset < low);
        if gone == 0 {
            return;
        }
        for e in self.entries.drain(..gone) {
            self.by_id.remove(&e.id);
        }
        self.base += gone as u64;
    }
}

/// The archives of the users of this processor's partitions.
#[derive(Debug, Default)]
pub struct Index {
    users: HashMap<BareJid, UserArchive>,
}

impl Index {
    /// Adds a message read at `offset`. Returns false when its archive id is already
    /// indexed (the router wrote it again after a restart): the first record wins.
    pub fn insert(&mut self, message: &ArchivedMessage, offset: Offset) -> bool {
        let user = self.users.entry(message.owner.clone()).or_default();
        if user.by_id.contains_key(&message.archive_id) {
            return false;
        }
        if user.entries.last().is_some_and(|e| e.offset >= offset) {
            // Records are indexed in log order; an older offset is a record seen before.
            return false;
        }
        let with = user.peer(message.with.as_str());
        let with_bare = user.peer(message.with.bare().as_str());
        let seq = user.base + user.entries.len() as u64;
        user.by_id.insert(message.archive_id, seq);
        user.entries.push(Entry {
            id: message.archive_id,
            offset,
            millis: message.timestamp.as_millis(),
            with,
            with_bare,
        });
        true
    }

    /// The archive of `owner`, if it has any message.
    pub fn user(&self, owner: &BareJid) -> Option<&UserArchive> {
        self.users.get(owner)
    }

    /// Forgets the messages of `owner` whose records are below `low`.
    pub fn prune(&mut self, owner: &BareJid, low: Offset) {
        if let Some(user) = self.users.get_mut(owner) {
            user.prune(low);
        }
    }

    /// Keeps only the users `keep` accepts (the partitions still assigned).
    pub fn retain_users(&mut self, mut keep: impl FnMut(&BareJid) -> bool) {
        self.users.retain(|u, _| keep(u));
    }

    /// How many messages are indexed.
    pub fn len(&self) -> usize {
        self.users.values().map(|u| u.entries.len()).sum()
    }

    /// Whether no message is indexed.
    pub fn is_empty(&self) -> bool {
        self.users.values().all(|u| u.entries.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imbus_core::{Direction, Jid, Timestamp};

    pub(crate) fn message(n: u128, owner: &str, with: &str, millis: i64) -> ArchivedMessage {
        ArchivedMessage {
            archive_id: Uuid::from_u128(n),
            event_id: Uuid::from_u128(n),
            owner: BareJid::new(owner).unwrap(),
            with: Jid::new(with).unwrap(),
            direction: Direction::Inbound,
            timestamp: Timestamp::from_micros(millis * 1000),
            xml: String::new(),
        }
    }

    #[test]
    fn duplicates_are_indexed_once_and_pruning_keeps_positions() {
        let mut index = Index::default();
        let alice = BareJid::new("alice@example.com").unwrap();
        assert!(index.insert(&message(1, "alice@example.com", "bob@example.com/a", 10), 0));
        assert!(index.insert(&message(2, "alice@example.com", "bob@example.com", 20), 1));
        // The same message written again (a router restart): kept once.
        assert!(!index.insert(&message(1, "alice@example.com", "bob@example.com/a", 10), 5));
        assert!(index.insert(&message(3, "alice@example.com", "carol@example.com", 30), 6));
        let user = index.user(&alice).unwrap();
        assert_eq!(user.entries().len(), 3);
        assert_eq!(user.entries()[0].with_bare, user.entries()[1].with_bare);
        assert_ne!(user.entries()[0].with, user.entries()[1].with);
        index.prune(&alice, 1);
        let user = index.user(&alice).unwrap();
        assert_eq!(user.entries().len(), 2);
        assert_eq!(user.position(&Uuid::from_u128(1)), None);
        assert_eq!(user.position(&Uuid::from_u128(3)), Some(1));
        index.retain_users(|u| u.as_str() != "alice@example.com");
        assert!(index.is_empty());
    }
}

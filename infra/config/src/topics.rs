//! The topics imbus creates at start, with their keys and cleanup policies.
//!
//! ARCHITECTURE.md keeps the same table with what each topic carries; this module is the
//! one place the names, partition counts and policies are decided.

use std::time::Duration;

/// Every stanza a client sent, sender stamped (key: the sender's bare JID, so outbound
/// processing runs on the partition holding the sender's state).
pub const STANZAS: &str = "stanzas";
/// Stanzas the router forwards to the partition of the account receiving them (key: the
/// recipient's bare JID): messages, presence broadcasts, probes, subscription requests.
pub const ROUTED: &str = "routed";
/// Session bound/updated/closed (key: the session's full JID; partition: the user's bare JID). Compacted.
pub const SESSIONS: &str = "sessions";
/// Offline messages stored/delivered/expired (key: recipient bare JID + message id;
/// partition: the recipient's bare JID). Compacted.
pub const OFFLINE: &str = "offline";
/// Accounts with SCRAM credentials (key: user bare JID). Compacted.
pub const ACCOUNTS: &str = "accounts";
/// Roster items and subscriptions (key: user bare JID + contact; partition: the user's
/// bare JID). Compacted.
pub const ROSTERS: &str = "rosters";
/// One record per recipient per IM (key: recipient bare JID).
pub const COMPLIANCE: &str = "compliance";
/// Compliance records the compliance sink could not archive (key: recipient bare JID):
/// the original record's value unchanged, the reason in the record's headers.
pub const COMPLIANCE_DEAD: &str = "compliance.dead";
/// Live settings (key: setting name). Compacted, one partition (total order of changes).
pub const CONFIG: &str = "config";
/// XML stored on an account's behalf: vCard (XEP-0054), private XML storage (XEP-0049),
/// block list (XEP-0191) (key: user bare JID + `\u{0}` + the element's XML namespace;
/// partition: the user's bare JID). Compacted.
pub const USERDATA: &str = "userdata";
/// Users' message archives (XEP-0313): `ArchivedMessage` records and the archive queries
/// the router forwards (`StanzaReceived`), both keyed by the owner's bare JID, so one
/// partition holds a user's archive and its queries in log order. Delete policy; its
/// retention is the `mam.retention` setting.
pub const ARCHIVE: &str = "archive";
/// The chat rooms' changelog: the complete state of each room after every change (key:
/// the room's bare JID; a tombstone when a room ends). Compacted.
pub const ROOMS: &str = "rooms";
/// Stanzas addressed to the chat service, its rooms and their occupants, forwarded by the
/// router (key: the room's bare JID at the canonical chat service domain, or the service
/// domain for stanzas to the service itself), so a room's stanzas are processed in order
/// on its partition.
pub const ROOMS_STANZAS: &str = "rooms.stanzas";
/// The room archive's input besides the `rooms` changelog: every group chat message of
/// an archived room (`ArchivedMessage`, owner the room) and the archive queries to the
/// room (`StanzaReceived`) the rooms processor accepted, both keyed by the room's bare
/// JID, so a query follows every message of the room written before it. Delete policy;
/// its retention is the `mam.retention` setting.
pub const ROOMS_ARCHIVE: &str = "rooms.archive";

/// The prefix of the per-gateway delivery topics: `deliver.<gateway-id>`.
pub const DELIVER_PREFIX: &str = "deliver.";

/// How a system topic is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLayout {
    pub name: &'static str,
    pub compacted: bool,
    /// `None`: the configured `bus.partitions`.
    pub partitions: Option<i32>,
    pub retention: Option<Duration>,
}

/// The system topics, created at start by every process that appends to them.
pub const SYSTEM_TOPICS: &[TopicLayout] = &[
    TopicLayout {
        name: STANZAS,
        compacted: false,
        partitions: None,
        retention: Some(Duration::from_secs(7 * 24 * 3600)),
    },
    TopicLayout {
        name: ROUTED,
        compacted: false,
        partitions: None,
        retention: Some(Duration::from_secs(7 * 24 * 3600)),
    },
    TopicLayout {
        name: SESSIONS,
        compacted: true,
        partitions: None,
        retention: None,
    },
    TopicLayout {
        name: OFFLINE,
        compacted: true,
        partitions: None,
        retention: None,
    },
    TopicLayout {
        name: ACCOUNTS,
        compacted: true,
        partitions: None,
        retention: None,
    },
    TopicLayout {
        name: ROSTERS,
        compacted: true,
        partitions: None,
        retention: None,
    },
    TopicLayout {
        name: COMPLIANCE,
        compacted: false,
        partitions: None,
        retention: None,
    },
    TopicLayout {
        name: COMPLIANCE_DEAD,
        compacted: false,
        partitions: None,
        retention: None,
    },
    TopicLayout {
        name: CONFIG,
        compacted: true,
        partitions: Some(1),
        retention: None,
    },
    TopicLayout {
        name: USERDATA,
        compacted: true,
        partitions: None,
        retention: None,
    },
    TopicLayout {
        name: ARCHIVE,
        compacted: false,
        partitions: None,
        // The default of `mam.retention`; processes create it with the configured value.
        retention: Some(Duration::from_secs(365 * 24 * 3600)),
    },
    TopicLayout {
        name: ROOMS,
        compacted: true,
        partitions: None,
        retention: None,
    },
    TopicLayout {
        name: ROOMS_STANZAS,
        compacted: false,
        partitions: None,
        retention: Some(Duration::from_secs(7 * 24 * 3600)),
    },
    TopicLayout {
        name: ROOMS_ARCHIVE,
        compacted: false,
        partitions: None,
        // The default of `mam.retention`; processes create it with the configured value.
        retention: Some(Duration::from_secs(365 * 24 * 3600)),
    },
];

/// The delivery topic of a gateway.
pub fn deliver_topic(gateway_id: &str) -> String {
    format!("{DELIVER_PREFIX}{gateway_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_kafka_valid() {
        let mut seen = std::collections::HashSet::new();
        for t in SYSTEM_TOPICS {
            assert!(seen.insert(t.name));
            assert!(
                t.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            );
        }
        assert_eq!(deliver_topic("gw-1"), "deliver.gw-1");
    }

    #[test]
    fn userdata_is_a_compacted_topic_partitioned_like_the_others() {
        let layout = SYSTEM_TOPICS.iter().find(|t| t.name == USERDATA).unwrap();
        assert!(layout.compacted);
        assert_eq!(layout.partitions, None);
        assert_eq!(layout.retention, None);
    }
}

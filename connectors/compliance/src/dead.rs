//! Dead letters (pure): a compliance record the sink cannot archive, as it goes to the
//! `compliance.dead` topic.
//!
//! The framing follows Kafka Connect's dead-letter queues: the record's key and value are
//! the original ones, unchanged (the value stays a Confluent-framed `ComplianceRecord`, or
//! whatever bytes could not be decoded), and headers say why and where it came from:
//!
//! | header | value (UTF-8) |
//! |---|---|
//! | `imbus.dead.reason` | why it was not archived, e.g. the database's error message |
//! | `imbus.dead.topic` | the topic it was read from (`compliance`) |
//! | `imbus.dead.partition` | its partition, decimal |
//! | `imbus.dead.offset` | its offset, decimal |
//! | `imbus.dead.timestamp` | its log time, milliseconds since the epoch, decimal |

use imbus_log::{ConsumedRecord, Record};

pub const REASON: &str = "imbus.dead.reason";
pub const TOPIC: &str = "imbus.dead.topic";
pub const PARTITION: &str = "imbus.dead.partition";
pub const OFFSET: &str = "imbus.dead.offset";
pub const TIMESTAMP: &str = "imbus.dead.timestamp";

/// The dead letter of `original`, rejected for `reason`.
pub fn dead_letter(original: &ConsumedRecord, reason: &str) -> Record {
    let mut record = Record {
        key: original.key.clone(),
        value: original.value.clone(),
        timestamp: None,
        headers: Vec::new(),
    };
    record = record
        .header(REASON, reason.to_owned())
        .header(TOPIC, original.topic.to_string())
        .header(PARTITION, original.partition.to_string())
        .header(OFFSET, original.offset.to_string())
        .header(TIMESTAMP, original.timestamp.to_string());
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn keeps_key_and_value_and_says_why() {
        let original = ConsumedRecord {
            topic: "compliance".into(),
            partition: 3,
            offset: 17,
            key: Some(Bytes::from_static(b"bob@example.com")),
            value: Some(Bytes::from_static(b"\0\0\0\x06\x41...")),
            timestamp: 1234,
            headers: vec![],
        };
        let d = dead_letter(&original, "value too long for column body_text");
        assert_eq!(d.key, original.key);
        assert_eq!(d.value, original.value);
        let h = |k: &str| {
            d.headers
                .iter()
                .find(|h| h.key == k)
                .map(|h| String::from_utf8(h.value.to_vec()).unwrap())
        };
        assert_eq!(
            h(REASON).as_deref(),
            Some("value too long for column body_text")
        );
        assert_eq!(h(TOPIC).as_deref(), Some("compliance"));
        assert_eq!(h(PARTITION).as_deref(), Some("3"));
        assert_eq!(h(OFFSET).as_deref(), Some("17"));
        assert_eq!(h(TIMESTAMP).as_deref(), Some("1234"));
    }
}

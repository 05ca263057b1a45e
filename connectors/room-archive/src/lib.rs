//! The room-archive connector: persistent chat rooms and their transcripts in an SQL
//! database (PostgreSQL, MySQL/MariaDB or SQLite), and XEP-0313 archive queries to rooms
//! answered from it, with full-text search on message bodies (XEP-0431).
//!
//! # Input
//!
//! A member of the consumer group `room-archive` ([`GROUP`]) on two topics:
//!
//! - `rooms`, the rooms processor's compacted changelog: each persistent room's state
//!   becomes a `TC_ROOMS` row and its affiliations `TC_USERS` rows; a destroyed room
//!   keeps its row (with `destroyed_at`) and its transcript. A state that changes nothing
//!   those tables hold (a message added to the room's history, an occupant entering) is
//!   not written again.
//! - `rooms.archive`: the group chat messages of persistent rooms (written by the rooms
//!   processor when "archive all room messages" is on, each with its archive id, the id
//!   of the `<stanza-id/>` occupants received) become `TC_MSGARCHIVE` rows; the archive
//!   queries the rooms processor accepted (it checks who may read a room's archive) come
//!   on the same partition as the room's messages, after them.
//!
//! # Guarantees
//!
//! - **At least once, stored once.** A batch of records is one transaction; offsets are
//!   committed after it (and after the answers to its queries). Rows are keyed by the
//!   room and by the message's archive id, so a redelivered batch changes nothing.
//! - **A query sees everything before it.** Before answering a query the connector
//!   writes every record that preceded it; the answer is one result message per message
//!   found and the IQ result with `<fin/>` (XEP-0059 paging, in transcript order).
//! - **Rooms never wait for the database.** The rooms processor does not touch it.
//!   While the database is unreachable the connector raises the alarm
//!   (`imbus_room_archive_up = 0`, an error log naming the database), keeps the batch,
//!   retries with back-off, answers the waiting queries with a `wait` error, and catches
//!   up from the log when the database is back. Queries that waited longer than ten
//!   minutes on the log are not answered (their client gave up).
//!
//! # Layout
//!
//! Pure: [`model`] (rows, searches, pages), [`convert`] (records → rows, queries →
//! searches, pages → answers). IO: [`db`] (pools, migrations, writes, searches),
//! [`connector`] (the consume loop), [`metrics`].

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod connector;
pub mod convert;
pub mod db;
pub mod metrics;
pub mod model;

pub use connector::{ConnectorError, ConnectorOptions, GROUP, run};
pub use metrics::ArchiveMetrics;

/// The database the configuration names: `rooms.archive.database_url`, or the SQLite
/// file `data_dir/rooms.sqlite` (created if missing) when that is empty.
pub fn database_url(config: &imbus_config::Config) -> String {
    if config.rooms.archive.database_url.is_empty() {
        imbus_connector_compliance::settings::sqlite_url(&config.data_dir.join("rooms.sqlite"))
    } else {
        config.rooms.archive.database_url.clone()
    }
}

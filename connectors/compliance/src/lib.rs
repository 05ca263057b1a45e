//! The compliance sink: archives every IM of the `compliance` topic into an SQL database
//! (PostgreSQL, MySQL/MariaDB or SQLite), one row per recipient.
//!
//! One-to-one messages (`chat`, `normal`, `headline`) go to the table `JM`, group chat
//! messages to `TC_MSGARCHIVE` (the table names of the reference compliance schema). The
//! tables are created and upgraded by migrations embedded in the binary, one set per
//! backend (`migrations/<backend>`), when the sink first reaches the database.
//!
//! # Guarantees
//!
//! * **At least once, stored once.** The sink is a member of the consumer group
//!   `compliance-sink` on the `compliance` topic (embedded log or Kafka, through the
//!   `imbus-log` [`Consumer`](imbus_log::Consumer) trait). A batch of records is written in
//!   one database transaction, and the group's offsets are committed only after that
//!   transaction committed. A crash in between redelivers the batch; every row carries a
//!   unique `record_id` (UUID v5 of the event id and the recipient), and inserts are
//!   `ON CONFLICT DO NOTHING` (PostgreSQL, SQLite) or `ON DUPLICATE KEY UPDATE` as a no-op
//!   (MySQL — not `INSERT IGNORE`, which would turn a value too long into a warning and
//!   cut it), so a redelivered record is never stored twice.
//! * **Outages pause, never drop.** When the database is unreachable or failing, the sink
//!   keeps the batch, retries with exponential back-off (0.5 s doubling to 30 s), logs an
//!   error naming the database (URL without password) and the error, and reports
//!   `imbus_compliance_sink_up = 0`; IMs keep being delivered and accumulate on the topic.
//!   When the database is back, archiving resumes from the committed offsets.
//! * **Poison records are isolated.** When the database refuses a batch for a reason
//!   tied to the data (encoding, value too long, constraint), the batch is retried row by
//!   row; the refused rows go to the `compliance.dead` topic with the reason (see
//!   [`dead`]) and are counted in `imbus_compliance_dead_letters_total`. Records that do
//!   not decode go there too. Nothing is dropped silently, nothing is truncated: MySQL
//!   sessions run in strict mode, text columns are `LONGTEXT` in `utf8mb4`.
//!
//! # One implementation per backend, not `sqlx::Any`
//!
//! [`db::Database`] holds a PostgreSQL, MySQL or SQLite pool and has one insert function
//! per backend. `sqlx::Any` would save little and lose what the sink depends on: the
//! idempotent insert differs per backend (`ON CONFLICT` versus `ON DUPLICATE KEY`, and
//! MySQL needs a separate count of rows already present because it reports them as
//! affected), `Any` supports no date/time type (the archive keeps `TIMESTAMPTZ` /
//! `DATETIME(6)` columns that database tools can query), telling a transient failure from
//! a refused row needs each backend's own error codes (SQLSTATE classes, MySQL error
//! numbers, SQLite result codes), and each backend needs its own session set-up (MySQL
//! strict mode and `utf8mb4`, SQLite WAL with full fsync).
//!
//! # Layout
//!
//! Pure: [`row`] (record → row, filtering by [`settings`]), [`dead`] (dead-letter
//! framing), [`settings`]. IO: [`db`] (pools, migrations, inserts), [`sink`] (the consume
//! loop), [`metrics`].

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod db;
pub mod dead;
pub mod export;
pub mod metrics;
pub mod replay;
pub mod row;
pub mod settings;
pub mod sink;

pub use db::{Database, DbError, Written};
pub use metrics::SinkMetrics;
pub use settings::{SinkSettings, database_url, redact_url};
pub use sink::{CommitObserver, GROUP, SinkError, SinkOptions, run};

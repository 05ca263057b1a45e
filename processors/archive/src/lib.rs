//! The message archive processor (XEP-0313 Message Archive Management).
//!
//! The router writes, on topic `archive` and in the owner's partition, one
//! `ArchivedMessage` record per one-to-one message a user sent or received, and forwards
//! there the user's archive queries (`StanzaReceived`), after the records written before
//! them. This processor (consumer group `archive`) folds the records into a per-user
//! [`Index`] — archive id, time, the other party and the record's offset, never the
//! message itself — and answers each query from it: [`plan`] selects the page (pure),
//! the runner reads the page's messages back from the log by offset and writes the
//! result messages and the closing IQ to the querying session's delivery topic.
//!
//! Nothing is stored besides the log: a restarted processor rebuilds its index from the
//! `archive` partitions it is assigned, and a record the router wrote twice (after a
//! restart) carries the same archive id and is indexed once.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod index;
mod query;
mod runner;

pub use index::{Entry, Index, UserArchive};
pub use query::{
    Answer, DEFAULT_PAGE, FULLTEXT_FIELD, MAX_PAGE, NS_FULLTEXT, NS_MAM, Page, Plan, Query,
    answer_delivery, error_delivery, evaluate, fin_element, parse_datetime, parse_query, plan,
    query_form, result_delivery,
};
pub use runner::{ArchiveError, GROUP, QUERY_MAX_AGE, run, write_deliveries};

#[cfg(test)]
mod tests;

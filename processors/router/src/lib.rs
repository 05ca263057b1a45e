//! The imbus router processor: decides where every message, presence and IQ goes.
//!
//! The router owns no storage. Its state — the sessions of each user, their rosters and
//! which accounts exist — is a fold over the `sessions`, `rosters` and `accounts` topics,
//! partitioned by the user who owns it, so any router instance can rebuild a partition
//! and carry on. The decisions are pure ([`Router::handle`]: state and event in, outputs
//! out); [`run`] is the thin consume/produce loop around them.
//!
//! A stanza is processed on the sender's partition first (outbound: roster and presence
//! changes, answers from the server, presence fan-out to subscribers), then forwarded on
//! `routed` to the recipient's partition (inbound: delivery to the recipient's sessions
//! per RFC 6121 §8.5, inbound subscription handling). Partitions never call each other:
//! everything between them travels through the log.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod router;
mod runner;
mod state;

pub use router::{
    Input, Output, Router, RouterConfig, message_delivery_id, offline_key, parse_stanza,
    presence_key, rooms_key, roster_key, user_data_key,
};
pub use runner::{GROUP, RouterError, run};
pub use state::{Item, Presence, Session, State, Taken, User};

#[cfg(test)]
mod tests;

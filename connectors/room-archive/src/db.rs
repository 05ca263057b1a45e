//! The room-archive database.

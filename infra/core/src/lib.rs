//! imbus-core

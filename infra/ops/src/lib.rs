//! imbus-ops

//! imbus-config

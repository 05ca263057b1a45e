//! imbus-log-embedded

//! imbus-log-kafka

//! imbus-tests

//! imbus-schemas

//! Mapping librdkafka errors onto [`LogError`].

use imbus_log::LogError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What an operation was doing when it failed, to make the error message useful.
pub(crate) fn map_kafka_error(context: &str, error: &KafkaError) -> LogError {
    match error.rdkafka_error_code() {
        Some(code) => map_code(context, code, &error.to_string()),
        None => LogError::Broker(format!("{context}: {error}")),
    }
}

/// Maps an error code (with the client's description of it) onto [`LogError`].
pub(crate) fn map_code(context: &str, code: RDKafkaErrorCode, detail: &str) -> LogError {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut | C::OperationTimedOut | C::RequestTimedOut => {
            LogError::Timeout(format!("{context}: {detail}"))
        }
        C::BrokerDestroy => LogError::Closed,
        _ => LogError::Broker(format!("{context}: {detail}")),
    }
}

/// A client could not be created (bad configuration, usually one of the extra settings).
pub(crate) fn config_error(what: &str, error: &KafkaError) -> LogError {
    LogError::InvalidArgument(format!("cannot create the Kafka {what}: {error}"))
}

/// The error for a record librdkafka refused as too large.
pub(crate) fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

/// Whether an error says the topic (or partition) does not exist.
pub(crate) fn is_unknown_topic(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

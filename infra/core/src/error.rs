/// Why a value was refused when building a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A gateway id is used in topic names (`deliver.<gateway-id>`), so it follows Kafka's
    /// topic-name rule.
    #[error(
        "invalid gateway id {0:?}: use 1 to {max} characters of a-z, A-Z, 0-9, '.', '_' and '-'",
        max = crate::GatewayId::MAX_LEN
    )]
    GatewayId(String),
    /// A session id is printable ASCII without spaces.
    #[error(
        "invalid session id {0:?}: use 1 to {max} printable ASCII characters without spaces",
        max = crate::SessionId::MAX_LEN
    )]
    SessionId(String),
    /// A setting name is a dotted name.
    #[error(
        "invalid setting name {0:?}: use 1 to {max} characters of a-z, A-Z, 0-9, '.', '_' and '-'",
        max = crate::ConfigKey::MAX_LEN
    )]
    ConfigKey(String),
    /// SCRAM credentials that cannot have come from a SCRAM key derivation.
    #[error("invalid {hash} credentials: {problem}")]
    Scram {
        hash: crate::ScramHash,
        problem: String,
    },
}

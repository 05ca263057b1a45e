//! Which SASL mechanisms a stream offers, and the channel bindings they can use.

use std::fmt;

use imbus_core::ScramHash;

/// A SASL mechanism the server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256 with channel binding (RFC 7677, RFC 5802 §6).
    ScramSha256Plus,
    /// SCRAM-SHA-1 with channel binding (RFC 5802).
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// PLAIN (RFC 4616): the password in the clear, only over TLS.
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first: the order in which they are offered.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The registered SASL name, e.g. `SCRAM-SHA-256-PLUS`.
    pub const fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism with this name. SASL mechanism names are upper case; other spellings
    /// are not accepted.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash function, `None` for PLAIN.
    pub const fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }

    /// Whether this is a `-PLUS` (channel binding) variant.
    pub const fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A channel binding type (RFC 5056) the server can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelBindingType {
    /// `tls-exporter` (RFC 9266): keying material exported from a TLS 1.3 connection with
    /// the label `EXPORTER-Channel-Binding` and no context, 32 bytes.
    TlsExporter,
    /// `tls-server-end-point` (RFC 5929 §4): the hash of the server's certificate.
    TlsServerEndPoint,
}

impl ChannelBindingType {
    /// Every type, preferred first.
    pub const ALL: [ChannelBindingType; 2] = [
        ChannelBindingType::TlsExporter,
        ChannelBindingType::TlsServerEndPoint,
    ];

    /// The registered name, as it appears in a GS2 header (`p=<name>`) and in the
    /// XEP-0440 `<channel-binding type='…'/>` advertisement.
    pub const fn name(self) -> &'static str {
        match self {
            ChannelBindingType::TlsExporter => "tls-exporter",
            ChannelBindingType::TlsServerEndPoint => "tls-server-end-point",
        }
    }

    /// The type with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for ChannelBindingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Channel binding data of one connection, as the TLS layer computed it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelBinding {
    kind: ChannelBindingType,
    data: Vec<u8>,
}

impl ChannelBinding {
    /// Binding data of a type; empty data means the binding is not available and is
    /// ignored by [`Offer::new`].
    pub fn new(kind: ChannelBindingType, data: Vec<u8>) -> Self {
        Self { kind, data }
    }

    /// The type.
    pub fn kind(&self) -> ChannelBindingType {
        self.kind
    }

    /// The data.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// The binding data identifies the TLS session: debug output shows only its length.
impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBinding")
            .field("kind", &self.kind)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// What the server is willing to offer; the transport decides the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MechanismPolicy {
    /// Offer PLAIN (always only over TLS). Off by default: SCRAM keeps the password off
    /// the server; PLAIN is for older clients.
    pub plain: bool,
    /// When channel binding is available, offer only the `-PLUS` mechanisms, so a client
    /// cannot be talked into an unbound exchange. Off by default.
    pub require_channel_binding: bool,
}

/// The mechanisms to offer in stream features, strongest first.
///
/// - `-PLUS` variants only over TLS with channel binding data available, first;
/// - SCRAM-SHA-256 before SCRAM-SHA-1;
/// - PLAIN last, only over TLS and only if the policy enables it;
/// - with [`MechanismPolicy::require_channel_binding`], only `-PLUS` variants (and so
///   nothing at all when no channel binding is available).
pub fn offered_mechanisms(
    tls: bool,
    channel_binding_available: bool,
    policy: &MechanismPolicy,
) -> Vec<Mechanism> {
    let plus = tls && channel_binding_available;
    Mechanism::ALL
        .into_iter()
        .filter(|m| match m {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus => plus,
            Mechanism::ScramSha256 | Mechanism::ScramSha1 => !policy.require_channel_binding,
            Mechanism::Plain => tls && policy.plain && !policy.require_channel_binding,
        })
        .collect()
}

/// What one stream offered: its mechanisms and the channel bindings of its connection.
///
/// Built once per stream when the features are sent, and handed to every
/// [`SaslServer`](crate::SaslServer) of that stream, which uses it to refuse mechanisms
/// that were not offered and to detect channel binding downgrades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    tls: bool,
    policy: MechanismPolicy,
    mechanisms: Vec<Mechanism>,
    bindings: Vec<ChannelBinding>,
}

impl Offer {
    /// The offer for a stream: `tls` says whether the stream is encrypted, `bindings` is
    /// the channel binding data the TLS layer computed, preferred type first (entries with
    /// empty data, repeated types, and all of them when `tls` is false are dropped).
    pub fn new(policy: MechanismPolicy, tls: bool, bindings: Vec<ChannelBinding>) -> Self {
        let mut kept: Vec<ChannelBinding> = Vec::new();
        if tls {
            for binding in bindings {
                if !binding.data.is_empty() && kept.iter().all(|k| k.kind != binding.kind) {
                    kept.push(binding);
                }
            }
        }
        let mechanisms = offered_mechanisms(tls, !kept.is_empty(), &policy);
        Self {
            tls,
            policy,
            mechanisms,
            bindings: kept,
        }
    }

    /// The mechanisms to list in `<mechanisms/>`, in order.
    pub fn mechanisms(&self) -> &[Mechanism] {
        &self.mechanisms
    }

    /// Whether the stream is encrypted.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The policy the offer was built with.
    pub fn policy(&self) -> &MechanismPolicy {
        &self.policy
    }

    /// The channel binding types to advertise (XEP-0440 `<sasl-channel-binding/>`), in
    /// preference order; empty when no `-PLUS` mechanism is offered.
    pub fn channel_binding_types(&self) -> impl Iterator<Item = ChannelBindingType> + '_ {
        self.bindings.iter().map(|b| b.kind)
    }

    /// Whether a `-PLUS` mechanism is offered.
    pub fn offers_plus(&self) -> bool {
        self.mechanisms.iter().any(|m| m.is_plus())
    }

    /// Whether a mechanism is offered.
    pub fn offers(&self, mechanism: Mechanism) -> bool {
        self.mechanisms.contains(&mechanism)
    }

    pub(crate) fn binding(&self, kind: ChannelBindingType) -> Option<&ChannelBinding> {
        self.bindings.iter().find(|b| b.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Mechanism::*;

    #[test]
    fn names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        for t in ChannelBindingType::ALL {
            assert_eq!(ChannelBindingType::from_name(t.name()), Some(t));
        }
        assert_eq!(ChannelBindingType::from_name("tls-unique"), None);
    }

    #[test]
    fn mechanism_order_and_conditions() {
        let plain = MechanismPolicy {
            plain: true,
            ..MechanismPolicy::default()
        };
        let default = MechanismPolicy::default();
        assert_eq!(
            offered_mechanisms(true, true, &plain),
            vec![
                ScramSha256Plus,
                ScramSha1Plus,
                ScramSha256,
                ScramSha1,
                Plain
            ]
        );
        assert_eq!(
            offered_mechanisms(true, true, &default),
            vec![ScramSha256Plus, ScramSha1Plus, ScramSha256, ScramSha1]
        );
        assert_eq!(
            offered_mechanisms(true, false, &plain),
            vec![ScramSha256, ScramSha1, Plain]
        );
        // Without TLS: no PLAIN, no channel binding even if some data was claimed.
        assert_eq!(
            offered_mechanisms(false, true, &plain),
            vec![ScramSha256, ScramSha1]
        );
        let strict = MechanismPolicy {
            plain: true,
            require_channel_binding: true,
        };
        assert_eq!(
            offered_mechanisms(true, true, &strict),
            vec![ScramSha256Plus, ScramSha1Plus]
        );
        assert_eq!(offered_mechanisms(true, false, &strict), vec![]);
    }

    #[test]
    fn offer_keeps_usable_bindings_only() {
        let bindings = vec![
            ChannelBinding::new(ChannelBindingType::TlsServerEndPoint, vec![]),
            ChannelBinding::new(ChannelBindingType::TlsExporter, vec![1; 32]),
            ChannelBinding::new(ChannelBindingType::TlsExporter, vec![2; 32]),
        ];
        let offer = Offer::new(MechanismPolicy::default(), true, bindings.clone());
        assert_eq!(
            offer.channel_binding_types().collect::<Vec<_>>(),
            vec![ChannelBindingType::TlsExporter]
        );
        assert_eq!(
            offer
                .binding(ChannelBindingType::TlsExporter)
                .unwrap()
                .data(),
            &[1; 32]
        );
        assert!(offer.offers_plus());
        let offer = Offer::new(MechanismPolicy::default(), false, bindings);
        assert_eq!(offer.channel_binding_types().count(), 0);
        assert!(!offer.offers_plus());
        assert_eq!(offer.mechanisms(), &[ScramSha256, ScramSha1]);
    }

    #[test]
    fn binding_debug_hides_data() {
        let shown = format!(
            "{:?}",
            ChannelBinding::new(ChannelBindingType::TlsExporter, vec![0xAB; 32])
        );
        assert!(
            shown.contains("data_len: 32") && !shown.contains("171"),
            "{shown}"
        );
    }
}

use jid::{BareJid, FullJid};

use crate::{GatewayId, SessionId, Timestamp};

/// A change in the life of one client session (topic `sessions`).
///
/// [`SessionEvent::Bound`] and [`SessionEvent::Updated`] carry the complete state of the
/// session, not a difference, so the latest event of a session is enough to know it (the
/// topic is compacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A resource was bound (RFC 6120 §7): the session can now send and receive stanzas.
    Bound(SessionState),
    /// The session's presence, priority or client features changed.
    Updated(SessionState),
    /// The session ended.
    Closed(SessionClosed),
}

impl SessionEvent {
    /// The session's full JID.
    pub fn jid(&self) -> &FullJid {
        match self {
            SessionEvent::Bound(state) | SessionEvent::Updated(state) => &state.jid,
            SessionEvent::Closed(closed) => &closed.jid,
        }
    }

    /// The gateway and session id the event is about.
    pub fn session(&self) -> (&GatewayId, &SessionId) {
        match self {
            SessionEvent::Bound(state) | SessionEvent::Updated(state) => {
                (&state.gateway_id, &state.session_id)
            }
            SessionEvent::Closed(closed) => (&closed.gateway_id, &closed.session_id),
        }
    }
}

/// Everything the server knows about a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The user's bare JID plus the bound resource.
    pub jid: FullJid,
    /// The gateway holding the session's socket.
    pub gateway_id: GatewayId,
    /// The session's id on that gateway.
    pub session_id: SessionId,
    /// When this state took effect.
    pub at: Timestamp,
    /// The session's presence.
    pub presence: SessionPresence,
    /// What the client asked the server to do for it.
    pub features: ClientFeatures,
}

impl SessionState {
    /// The user's account.
    pub fn user(&self) -> BareJid {
        self.jid.to_bare()
    }

    /// The bound resource.
    pub fn resource(&self) -> &str {
        self.jid.resource().as_str()
    }
}

/// The presence of one session (RFC 6121 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPresence {
    /// Whether and how the session is available.
    pub availability: Availability,
    /// The `<priority/>` (RFC 6121 §4.7.2.3): -128 to 127; negative means "never deliver
    /// messages addressed to the bare JID here".
    pub priority: i8,
    /// The `<status/>` text, if any.
    pub status: Option<String>,
}

impl SessionPresence {
    /// The presence of a freshly bound session that has not sent initial presence.
    pub fn unavailable() -> Self {
        Self {
            availability: Availability::Unavailable,
            priority: 0,
            status: None,
        }
    }

    /// Whether the session counts as available for message delivery and presence
    /// broadcast.
    pub fn is_available(&self) -> bool {
        self.availability != Availability::Unavailable
    }
}

/// Availability of a session: whether it sent available presence, and its `<show/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Availability {
    /// No initial presence yet, or the client sent unavailable presence.
    Unavailable,
    /// Available with no `<show/>`.
    Available,
    /// `<show>chat</show>`: free to chat.
    Chat,
    /// `<show>away</show>`.
    Away,
    /// `<show>xa</show>`: extended away.
    ExtendedAway,
    /// `<show>dnd</show>`: do not disturb.
    DoNotDisturb,
}

/// Server-side features the client switched on for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClientFeatures {
    /// Message Carbons (XEP-0280) are enabled: the session gets copies of the user's
    /// messages sent and received by other resources.
    pub carbons: bool,
    /// The client requested the roster, which makes it an "interested resource"
    /// (RFC 6121 §2.1.6) that receives roster pushes and subscription requests.
    pub roster_requested: bool,
}

/// The end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClosed {
    /// The session's full JID.
    pub jid: FullJid,
    /// The gateway that held the session.
    pub gateway_id: GatewayId,
    /// The session's id on that gateway.
    pub session_id: SessionId,
    /// When the session ended.
    pub at: Timestamp,
    /// Why it ended.
    pub reason: CloseReason,
    /// Details for operators (a stream error condition, an I/O error text), if any.
    pub detail: Option<String>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed its stream.
    ClientClosed,
    /// The connection broke or stopped answering.
    ConnectionLost,
    /// A new session bound the same full JID and replaced this one (`<conflict/>`).
    Replaced,
    /// The server ended the stream with a stream error caused by the client.
    StreamError,
    /// An administrator disconnected the session or deleted the account.
    AdminDisconnect,
    /// The gateway shut down.
    GatewayShutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_state_exposes_user_and_resource() {
        let state = SessionState {
            jid: FullJid::new("alice@example.com/phone").unwrap(),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: SessionId::new("s1").unwrap(),
            at: Timestamp::from_micros(5),
            presence: SessionPresence::unavailable(),
            features: ClientFeatures::default(),
        };
        assert_eq!(state.user(), BareJid::new("alice@example.com").unwrap());
        assert_eq!(state.resource(), "phone");
        assert!(!state.presence.is_available());
        let event = SessionEvent::Bound(state.clone());
        assert_eq!(event.jid(), &state.jid);
        assert_eq!(event.session().1.as_str(), "s1");
    }
}

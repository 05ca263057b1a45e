//! The state of one chat room (XEP-0045): what the compacted `rooms` changelog carries
//! (schema `RoomState`), and what a restarted rooms processor rebuilds by folding it.

use std::collections::BTreeMap;

use jid::{BareJid, FullJid};

use crate::{GatewayId, SessionId, Timestamp};

/// Who may see the real JIDs of the occupants (`muc#roomconfig_whois`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Whois {
    /// Semi-anonymous room: only moderators see real JIDs.
    Moderators,
    /// Non-anonymous room: every occupant sees real JIDs.
    Anyone,
}

impl Whois {
    /// The form value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Whois::Moderators => "moderators",
            Whois::Anyone => "anyone",
        }
    }
}

/// The configuration of one room (the `muc#owner` form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    /// A natural-language room name (`muc#roomconfig_roomname`).
    pub name: Option<String>,
    /// A short description (`muc#roomconfig_roomdesc`).
    pub description: Option<String>,
    /// The room survives its last occupant (`muc#roomconfig_persistentroom`).
    pub persistent: bool,
    /// The room is listed in service discovery and room search
    /// (`muc#roomconfig_publicroom`).
    pub public: bool,
    /// Only members (and admins, owners) may enter (`muc#roomconfig_membersonly`).
    pub members_only: bool,
    /// The password needed to enter, when the room is password-protected
    /// (`muc#roomconfig_passwordprotectedroom` + `muc#roomconfig_roomsecret`).
    pub password: Option<String>,
    /// Only occupants with voice may send group chat messages
    /// (`muc#roomconfig_moderatedroom`).
    pub moderated: bool,
    /// The most occupants at once (`muc#roomconfig_maxusers`); `None` is no limit.
    /// Admins and owners may always enter.
    pub max_users: Option<usize>,
    /// Who sees real JIDs (`muc#roomconfig_whois`).
    pub whois: Whois,
    /// How many messages the room keeps and sends to new joiners
    /// (`muc#maxhistoryfetch`, also accepted as `muc#roomconfig_historylength`); `None`
    /// follows the service setting "number of messages in chat history displayed for
    /// new participants" (which can change while the service runs), and any value is
    /// bounded by the service's longest history.
    pub history_length: Option<usize>,
    /// Participants (not only moderators) may change the subject
    /// (`muc#roomconfig_changesubject`).
    pub change_subject: bool,
    /// Occupants that are not admins may invite others to a members-only room
    /// (`muc#roomconfig_allowinvites`); in open rooms anyone may invite.
    pub allow_invites: bool,
}

impl Default for RoomConfig {
    /// A temporary, public, open, unmoderated, semi-anonymous room without password or
    /// occupant limit, following the service's history setting, where participants may
    /// change the subject and only admins invite into members-only rooms.
    fn default() -> Self {
        Self {
            name: None,
            description: None,
            persistent: false,
            public: true,
            members_only: false,
            password: None,
            moderated: false,
            max_users: None,
            whois: Whois::Moderators,
            history_length: None,
            change_subject: true,
            allow_invites: false,
        }
    }
}

/// A long-lived association of a user with a room (XEP-0045 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Affiliation {
    /// Banned.
    Outcast,
    /// No affiliation.
    None,
    /// A member (may enter a members-only room).
    Member,
    /// An administrator (moderator when present, manages members and bans).
    Admin,
    /// An owner (configures and destroys the room, manages admins and owners).
    Owner,
}

impl Affiliation {
    /// The attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// A temporary position of an occupant in a room (XEP-0045 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Not in the room.
    None,
    /// Present without voice (in a moderated room).
    Visitor,
    /// Present with voice.
    Participant,
    /// May kick, grant and revoke voice.
    Moderator,
}

impl Role {
    /// The attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// One user present in a room, through one client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    /// The occupant's real full JID.
    pub jid: FullJid,
    /// The gateway holding the occupant's session.
    pub gateway_id: GatewayId,
    /// The session on that gateway (deliveries go there; its end removes the occupant).
    pub session_id: SessionId,
    /// The service domain the occupant addressed the room through (the canonical service
    /// or an alias): stanzas to the occupant come from `room@<that domain>/nick`.
    pub service: String,
    /// The occupant's role.
    pub role: Role,
    /// The children of the occupant's last presence (show, status, priority, caps…)
    /// other than the MUC extensions, as XML, broadcast with its presence.
    pub presence: String,
    /// When the occupant entered.
    pub joined_at: Timestamp,
}

/// The room's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The subject text.
    pub text: String,
    /// The nickname of who set it (`None`: set by the room itself).
    pub nick: Option<String>,
    /// When it was set.
    pub at: Timestamp,
}

/// A message kept in the room's history, sent to new joiners (XEP-0045 §7.2.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    /// The sender's nickname.
    pub nick: String,
    /// The sender's real JID (shown to those who may see real JIDs).
    pub jid: FullJid,
    /// The message as broadcast, without `to` and `from` (they are set per recipient).
    pub xml: String,
    /// When the room received it.
    pub at: Timestamp,
}

/// One room: its complete state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// The room's identity: its node at the canonical service domain.
    pub jid: BareJid,
    /// The configuration.
    pub config: RoomConfig,
    /// A newly created room stays locked (nobody but its owners may enter) until an
    /// owner configures it or accepts the default configuration (XEP-0045 §10.1).
    pub locked: bool,
    /// Affiliations other than `none`, by bare JID.
    pub affiliations: BTreeMap<BareJid, Affiliation>,
    /// The occupants, by nickname.
    pub occupants: BTreeMap<String, Occupant>,
    /// The subject, if one was set.
    pub subject: Option<Subject>,
    /// The last messages, oldest first.
    pub history: Vec<HistoryMessage>,
    /// When the room was created.
    pub created_at: Timestamp,
}

impl Room {
    /// A new, empty room.
    pub fn new(jid: BareJid, config: RoomConfig, created_at: Timestamp) -> Self {
        Self {
            jid,
            config,
            locked: false,
            affiliations: BTreeMap::new(),
            occupants: BTreeMap::new(),
            subject: None,
            history: Vec::new(),
            created_at,
        }
    }

    /// The affiliation of a user.
    pub fn affiliation(&self, user: &BareJid) -> Affiliation {
        self.affiliations
            .get(user)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// The role an occupant with this affiliation gets on entering (XEP-0045 §5.1.2).
    pub fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// The nickname of the occupant with this real full JID.
    pub fn nick_of(&self, jid: &FullJid) -> Option<&str> {
        self.occupants
            .iter()
            .find(|(_, o)| &o.jid == jid)
            .map(|(n, _)| n.as_str())
    }

    /// The room's node (the part before `@`).
    pub fn node(&self) -> &str {
        self.jid.node().map(|n| n.as_str()).unwrap_or_default()
    }

    /// Sets an affiliation (`none` removes the entry).
    pub fn set_affiliation(&mut self, user: BareJid, affiliation: Affiliation) {
        if affiliation == Affiliation::None {
            self.affiliations.remove(&user);
        } else {
            self.affiliations.insert(user, affiliation);
        }
    }

    /// The owners.
    pub fn owners(&self) -> impl Iterator<Item = &BareJid> {
        self.affiliations
            .iter()
            .filter(|(_, a)| **a == Affiliation::Owner)
            .map(|(j, _)| j)
    }
}

//! Settings of the rooms service.

use std::collections::BTreeSet;

use imbus_core::{BareJid, FullJid, GatewayId};

use crate::state::RoomConfig;

/// Why a [`RoomsConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A service address must be a bare domain (`conference.example.com`).
    #[error("invalid chat service domain {0:?}: use a domain such as conference.example.com")]
    ServiceDomain(String),
    /// The history shown to new participants cannot exceed the history kept.
    #[error(
        "history for new participants ({shown}) exceeds the longest room history ({max}); \
         raise the maximum or lower the number shown"
    )]
    History {
        /// `history_for_new_joiners`.
        shown: usize,
        /// `max_history_length`.
        max: usize,
    },
}

/// Settings of the rooms service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsConfig {
    /// This chat node's primary domain (its system alias, or its first alias), named in
    /// logs.
    pub service: BareJid,
    /// Further domains the service answers for (the other chat node aliases of the
    /// cluster). The domain is part of a room's identity: `team@a.example` and
    /// `team@b.example` are two rooms, each keyed (changelog, compliance records,
    /// partition) by its own bare JID.
    pub aliases: BTreeSet<BareJid>,
    /// The service's name in service discovery.
    pub name: String,
    /// "Number of messages in chat history displayed for new participants" (default 15):
    /// the history length of rooms whose owner did not choose one. Changing it applies
    /// at once to those rooms.
    pub history_for_new_joiners: usize,
    /// The longest history a room may keep, whatever its owner configures (default 50).
    pub max_history_length: usize,
    /// The configuration of new rooms.
    pub default_room: RoomConfig,
    /// New rooms stay locked until their owner configures them or accepts the defaults
    /// (XEP-0045 §10.1.2, default on). When off, rooms are instant: usable at once.
    pub lock_new_rooms: bool,
    /// Only [`Self::creators`] may create rooms (default off: anyone may).
    pub creation_restricted: bool,
    /// Who may create rooms when creation is restricted: bare JIDs of users, or domains
    /// (every user of the domain).
    pub creators: BTreeSet<BareJid>,
    /// Gateways that serve SIP clients. A stanza published by one of them comes from a
    /// SIP user, and SIP users cannot take part in chat rooms: they get `not-allowed`
    /// ("SIP clients cannot join chat rooms").
    pub sip_gateways: BTreeSet<GatewayId>,
    /// Domains of SIP users (when SIP users have addresses of their own domain), refused
    /// like [`Self::sip_gateways`].
    pub sip_domains: BTreeSet<BareJid>,
    /// The most rooms one service discovery or search answer lists when the client asks
    /// for no limit (default 100).
    pub max_items: usize,
    /// "Enable persistent chat" (default on): owners may make rooms persistent. When
    /// off, a configuration that makes a room persistent is refused with
    /// `not-acceptable`; rooms already persistent stay so.
    pub persistent_chat: bool,
    /// "Archive all room messages" (default off here, on in the server's settings):
    /// every group chat message of a persistent room goes to the room archive
    /// ([`crate::Output::Archive`]) and carries a `<stanza-id/>` (its archive id).
    pub archive_all: bool,
}

impl RoomsConfig {
    /// Settings with the defaults, for the canonical service domain `service`.
    pub fn new(service: BareJid) -> Self {
        Self {
            service,
            aliases: BTreeSet::new(),
            name: "Chat rooms".to_owned(),
            history_for_new_joiners: 15,
            max_history_length: 50,
            default_room: RoomConfig::default(),
            lock_new_rooms: true,
            creation_restricted: false,
            creators: BTreeSet::new(),
            sip_gateways: BTreeSet::new(),
            sip_domains: BTreeSet::new(),
            max_items: 100,
            persistent_chat: true,
            archive_all: false,
        }
    }

    /// The settings of a server configuration: every chat node alias of the cluster
    /// (`rooms.aliases`, see [`Self::chat_node`]), and the `rooms.*` settings; `None` when
    /// an alias is not a valid XMPP domain.
    pub fn from_config(config: &imbus_config::Config) -> Option<Self> {
        let mut rooms = Self::chat_node(config)?;
        rooms.history_for_new_joiners = config.rooms.history_for_new_joiners;
        rooms.max_history_length = config.rooms.max_history_length;
        rooms.persistent_chat = config.rooms.persistent_chat;
        rooms.archive_all = config.rooms.archive_all;
        Some(rooms)
    }

    /// Checks the settings: service domains are domains, and the history shown to new
    /// participants fits the history kept.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for domain in std::iter::once(&self.service).chain(&self.aliases) {
            if domain.node().is_some() {
                return Err(ConfigError::ServiceDomain(domain.to_string()));
            }
        }
        if self.history_for_new_joiners > self.max_history_length {
            return Err(ConfigError::History {
                shown: self.history_for_new_joiners,
                max: self.max_history_length,
            });
        }
        Ok(())
    }

    /// Whether `domain` is one of the service's domains.
    pub fn serves(&self, domain: &str) -> bool {
        self.service.domain().as_str() == domain
            || self.aliases.iter().any(|a| a.domain().as_str() == domain)
    }

    /// The identity of the room `node` at the service domain `domain`.
    pub fn room_jid(&self, node: &str, domain: &str) -> Option<BareJid> {
        BareJid::new(&format!("{node}@{domain}")).ok()
    }

    /// The room a stanza addressed to `to` is for (its identity and partitioning key):
    /// `room@<domain>` when `to` is a room or an occupant at one of the service's domains,
    /// `None` for the service itself and for other domains.
    pub fn canonical_room(&self, to: &imbus_core::Jid) -> Option<BareJid> {
        let node = to.node()?;
        let domain = to.domain().as_str();
        self.serves(domain)
            .then(|| self.room_jid(node.as_str(), domain))
            .flatten()
    }

    /// Whether `user` may create rooms.
    pub fn may_create(&self, user: &FullJid) -> bool {
        !self.creation_restricted
            || self.creators.contains(&user.to_bare())
            || self
                .creators
                .iter()
                .any(|c| c.node().is_none() && c.domain() == user.domain())
    }

    /// The service domains of a configuration with the defaults: this node's system alias
    /// (or, when it has none, its first alias, or else the cluster's first) as
    /// [`Self::service`], every other chat node alias of the cluster as
    /// [`Self::aliases`]. Before any chat node registered, the system alias alone.
    pub fn chat_node(config: &imbus_config::Config) -> Option<Self> {
        let domains = config.chat_domains();
        let own = config.chat_nodes.aliases_of(config.node_id);
        let mut own: Vec<(&str, imbus_config::aliases::AliasKind)> = own
            .filter(|(name, _)| domains.iter().any(|d| d == name))
            .collect();
        own.sort_by_key(|(_, kind)| *kind);
        let system = config.system_chat_alias();
        let primary = own
            .first()
            .map(|(name, _)| (*name).to_owned())
            .or_else(|| domains.first().cloned())
            .unwrap_or(system);
        let mut rooms = Self::new(BareJid::new(&primary).ok()?);
        for domain in domains.iter().filter(|d| **d != primary) {
            rooms.aliases.insert(BareJid::new(domain).ok()?);
        }
        Some(rooms)
    }

    /// The history length of a room configured with `room`.
    pub fn history_length(&self, room: &RoomConfig) -> usize {
        room.history_length
            .unwrap_or(self.history_for_new_joiners)
            .min(self.max_history_length)
    }
}

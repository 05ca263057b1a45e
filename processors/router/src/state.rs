//! The router's state: a fold over the `sessions`, `rosters` and `accounts` topics of the
//! partitions it owns. Nothing here is stored anywhere but on the log.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use imbus_core::{
    AccountEvent, Availability, BareJid, FullJid, GatewayId, Jid, OfflineEvent, OfflineStored,
    RosterChanged, SessionEvent, SessionId, SessionPresence, Subscription, Timestamp, ToBare,
    UserDataChanged,
};

/// How many closed session ids are remembered, so a stanza that a closed session sent
/// just before it closed does not bring the session back.
const CLOSED_MEMORY: usize = 16_384;

/// The current presence of an available session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The availability (`show`).
    pub availability: Availability,
    /// The priority (-128..127); negative priorities receive no bare-JID messages.
    pub priority: i8,
    /// The status text.
    pub status: Option<String>,
    /// The presence stanza as the client sent it (without `to`), when known. After a
    /// restart it is rebuilt from the fields above.
    pub xml: Option<String>,
}

impl Presence {
    /// The presence as recorded on the `sessions` changelog.
    pub fn to_session_presence(&self) -> SessionPresence {
        SessionPresence {
            availability: self.availability,
            priority: self.priority,
            status: self.status.clone(),
        }
    }
}

/// One bound session of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The gateway holding it.
    pub gateway_id: GatewayId,
    /// Its id on that gateway.
    pub session_id: SessionId,
    /// `Some` while the session is available (it sent initial presence).
    pub presence: Option<Presence>,
    /// The client asked for the roster, so it gets roster pushes (RFC 6121 §2.1.6).
    pub roster_requested: bool,
    /// The client enabled Message Carbons (XEP-0280).
    pub carbons: bool,
    /// Where the session sent directed presence (it gets unavailable when the session
    /// goes unavailable, RFC 6121 §4.6.3).
    pub directed: BTreeSet<String>,
    /// When it started: the time of its `Bound` record, or the receive time of its first
    /// stanza when the router read that first. Of two sessions of one resource, the one
    /// that started later replaced the other.
    pub since: Timestamp,
}

impl Session {
    /// A freshly bound session: unavailable, no roster requested.
    pub fn new(gateway_id: GatewayId, session_id: SessionId, since: Timestamp) -> Self {
        Self {
            gateway_id,
            session_id,
            presence: None,
            roster_requested: false,
            carbons: false,
            directed: BTreeSet::new(),
            since,
        }
    }
}

/// What [`State::take_resource`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The session already holds its resource (its state as known).
    Held(Session),
    /// The session now holds its resource, replacing the one that held it, if any (now
    /// remembered as closed).
    New { replaced: Option<Session> },
    /// The session ended or was replaced by the one holding the resource: it is nothing
    /// any more (remembered as closed).
    Stale,
}

/// One roster item (RFC 6121 §2.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The user's name for the contact.
    pub name: Option<String>,
    /// Roster groups.
    pub groups: Vec<String>,
    /// The subscription state; [`Subscription::Remove`] means "not on the roster", kept
    /// only while an inbound subscription request is pending.
    pub subscription: Subscription,
    /// `ask='subscribe'`.
    pub ask_out: bool,
    /// A pending inbound subscription request (its stanza).
    pub pending_in: Option<String>,
    /// A pre-approved subscription (RFC 6121 §3.4).
    pub approved: bool,
}

impl Item {
    /// An item with subscription `none` and nothing else.
    pub fn empty() -> Self {
        Self {
            name: None,
            groups: Vec::new(),
            subscription: Subscription::None,
            ask_out: false,
            pending_in: None,
            approved: false,
        }
    }

    /// Whether the item is on the user's roster (and shown by roster gets).
    pub fn on_roster(&self) -> bool {
        self.subscription != Subscription::Remove
    }

    /// The contact now receives the user's presence (`none`→`from`, `to`→`both`; an item
    /// not on the roster joins it as `from`).
    pub fn add_subscriber(&mut self) {
        self.subscription = match self.subscription {
            Subscription::To | Subscription::Both => Subscription::Both,
            _ => Subscription::From,
        };
    }

    /// The user now receives the contact's presence (`none`→`to`, `from`→`both`).
    pub fn add_subscription(&mut self) {
        self.subscription = match self.subscription {
            Subscription::From | Subscription::Both => Subscription::Both,
            _ => Subscription::To,
        };
    }

    /// The contact no longer receives the user's presence (`from`→`none`, `both`→`to`).
    pub fn drop_subscriber(&mut self) {
        self.subscription = match self.subscription {
            Subscription::From => Subscription::None,
            Subscription::Both => Subscription::To,
            other => other,
        };
    }

    /// The user no longer receives the contact's presence (`to`→`none`, `both`→`from`).
    pub fn drop_subscription(&mut self) {
        self.subscription = match self.subscription {
            Subscription::To => Subscription::None,
            Subscription::Both => Subscription::From,
            other => other,
        };
    }

    /// Whether the item carries nothing and can be forgotten.
    pub fn is_void(&self) -> bool {
        !self.on_roster() && self.pending_in.is_none() && !self.approved && !self.ask_out
    }
}

/// Everything the router knows about one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// Bound sessions by resource.
    pub sessions: BTreeMap<String, Session>,
    /// Roster items by contact.
    pub roster: BTreeMap<BareJid, Item>,
    /// XML the server stores for the account (vCard, private XML), by namespace key.
    pub data: BTreeMap<String, String>,
    /// Messages stored while the account had no available resource, oldest first.
    pub offline: Vec<OfflineStored>,
    /// Conversation locks (lock-on-reply): for a contact, the resource of this user that
    /// last replied to it, and when the conversation last moved.
    pub locks: BTreeMap<BareJid, Lock>,
    /// Blocked addresses (XEP-0191): bare or full JIDs, domains, domain/resources; the
    /// parsed form of the `urn:xmpp:blocking` entry of [`Self::data`].
    pub blocked: BTreeSet<String>,
}

impl User {
    /// Whether stanzas between the user and `jid` are blocked (XEP-0191 §3.4, matching
    /// as XEP-0016: full JID, bare JID, domain/resource or domain).
    pub fn blocks(&self, jid: &Jid) -> bool {
        if self.blocked.is_empty() {
            return false;
        }
        let domain = jid.domain().as_str();
        let by_domain_resource = jid.resource().map(|r| format!("{domain}/{}", r.as_str()));
        self.blocked.contains(jid.as_str())
            || self.blocked.contains(jid.bare().as_str())
            || self.blocked.contains(domain)
            || by_domain_resource.is_some_and(|d| self.blocked.contains(&d))
    }
}

/// A conversation locked to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The resource that replied.
    pub resource: String,
    /// The last message of the conversation, either way.
    pub last: Timestamp,
}

/// The `data` key of the block list.
pub const BLOCKLIST_KEY: &str = "urn:xmpp:blocking";

/// The JIDs of a stored block list (`<blocklist xmlns='urn:xmpp:blocking'><item jid='…'/>
/// …</blocklist>`).
pub fn parse_blocklist(xml: &str) -> BTreeSet<String> {
    let wrapped = format!("<message xmlns='jabber:client'>{xml}</message>");
    crate::router::parse_stanza(&wrapped)
        .and_then(|m| m.children().next().cloned())
        .map(|list| {
            list.children()
                .filter(|c| c.name() == "item")
                .filter_map(|c| c.attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl User {
    /// The available sessions, by resource.
    pub fn available(&self) -> impl Iterator<Item = (&String, &Session, &Presence)> {
        self.sessions
            .iter()
            .filter_map(|(r, s)| s.presence.as_ref().map(|p| (r, s, p)))
    }
}

/// The router's state for the partitions it owns.
#[derive(Debug, Default)]
pub struct State {
    /// Users with sessions or roster items.
    pub users: HashMap<BareJid, User>,
    /// Existing accounts.
    pub accounts: HashSet<BareJid>,
    closed: HashSet<SessionId>,
    closed_order: VecDeque<SessionId>,
    /// The gateways sessions were seen on: every session of a gateway shares its id.
    gateways: HashSet<GatewayId>,
}

impl State {
    /// The user's state, created empty when absent.
    pub fn user_mut(&mut self, user: &BareJid) -> &mut User {
        self.users.entry(user.clone()).or_default()
    }

    /// The gateway id as already held by other sessions (one copy of its text for all).
    fn shared_gateway_id(&mut self, gateway_id: &GatewayId) -> GatewayId {
        if let Some(shared) = self.gateways.get(gateway_id) {
            return shared.clone();
        }
        self.gateways.insert(gateway_id.clone());
        gateway_id.clone()
    }

    /// Whether this session id was closed recently.
    pub fn was_closed(&self, session_id: &SessionId) -> bool {
        self.closed.contains(session_id)
    }

    /// Remembers a closed session id (bounded).
    pub fn remember_closed(&mut self, session_id: SessionId) {
        if self.closed.insert(session_id.clone()) {
            self.closed_order.push_back(session_id);
            while self.closed_order.len() > CLOSED_MEMORY {
                if let Some(old) = self.closed_order.pop_front() {
                    self.closed.remove(&old);
                }
            }
        }
    }

    /// Applies a roster changelog record.
    pub fn apply_roster(&mut self, change: &RosterChanged) {
        let item = Item {
            name: change.name.clone(),
            groups: change.groups.clone(),
            subscription: change.subscription,
            ask_out: change.ask_out,
            pending_in: change.pending_in.clone(),
            approved: change.approved,
        };
        let user = self.user_mut(&change.user);
        if item.is_void() {
            user.roster.remove(&change.contact);
        } else {
            user.roster.insert(change.contact.clone(), item);
        }
    }

    /// Removes a roster item on a tombstone of the changelog.
    pub fn forget_roster_item(&mut self, user: &BareJid, contact: &BareJid) {
        if let Some(u) = self.users.get_mut(user) {
            u.roster.remove(contact);
        }
    }

    /// Applies a user data changelog record.
    pub fn apply_user_data(&mut self, change: &UserDataChanged) {
        let user = self.user_mut(&change.user);
        if change.namespace == BLOCKLIST_KEY {
            user.blocked = change
                .xml
                .as_deref()
                .map(parse_blocklist)
                .unwrap_or_default();
        }
        match &change.xml {
            Some(xml) => {
                user.data.insert(change.namespace.clone(), xml.clone());
            }
            None => {
                user.data.remove(&change.namespace);
            }
        }
    }

    /// Applies an offline changelog record.
    pub fn apply_offline(&mut self, event: &OfflineEvent) {
        let user = self.user_mut(event.recipient());
        match event {
            OfflineEvent::Stored(stored) => {
                if !user
                    .offline
                    .iter()
                    .any(|m| m.message_event_id == stored.message_event_id)
                {
                    user.offline.push(stored.clone());
                }
            }
            OfflineEvent::Delivered(_) | OfflineEvent::Expired(_) => {
                let id = event.message_event_id();
                user.offline.retain(|m| m.message_event_id != id);
            }
        }
    }

    /// Applies an accounts changelog record.
    pub fn apply_account(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Created(state) | AccountEvent::Changed(state) => {
                self.accounts.insert(state.jid.clone());
            }
            AccountEvent::Deleted(deleted) => {
                self.accounts.remove(&deleted.jid);
            }
        }
    }

    /// A session, started at `since`, claims its resource. One session holds a full JID at
    /// a time: a gateway ends the older session when a newer one binds the same resource,
    /// without a `Closed` record for it (that would hide the newer one on the compacted
    /// topic). Whichever of the two started later holds the resource; the other is
    /// remembered as closed, so its late stanzas or records do not bring it back.
    pub fn take_resource(
        &mut self,
        jid: &FullJid,
        gateway_id: &GatewayId,
        session_id: &SessionId,
        since: Timestamp,
    ) -> Taken {
        if self.was_closed(session_id) {
            return Taken::Stale;
        }
        let resource = jid.resource().as_str();
        let held = self.user_mut(&jid.bare()).sessions.get(resource).cloned();
        match held {
            Some(s) if &s.session_id == session_id => Taken::Held(s),
            Some(s) if s.since > since => {
                self.remember_closed(session_id.clone());
                Taken::Stale
            }
            replaced => {
                let gateway_id = self.shared_gateway_id(gateway_id);
                let session = Session::new(gateway_id, session_id.clone(), since);
                self.user_mut(&jid.bare())
                    .sessions
                    .insert(resource.to_owned(), session);
                if let Some(old) = &replaced {
                    self.remember_closed(old.session_id.clone());
                }
                Taken::New { replaced }
            }
        }
    }

    /// Applies a sessions changelog record while restoring (no outputs).
    pub fn apply_session(&mut self, event: &SessionEvent) {
        match event {
            SessionEvent::Bound(state) => {
                self.take_resource(&state.jid, &state.gateway_id, &state.session_id, state.at);
            }
            SessionEvent::Updated(state) => {
                let user = self.user_mut(&state.user());
                if let Some(session) = user.sessions.get_mut(state.resource())
                    && session.session_id == state.session_id
                {
                    session.roster_requested = state.features.roster_requested;
                    session.carbons = state.features.carbons;
                    session.presence = state.presence.is_available().then(|| Presence {
                        availability: state.presence.availability,
                        priority: state.presence.priority,
                        status: state.presence.status.clone(),
                        xml: None,
                    });
                }
            }
            SessionEvent::Closed(closed) => {
                self.remember_closed(closed.session_id.clone());
                let bare = closed.jid.bare();
                if let Some(user) = self.users.get_mut(&bare) {
                    let resource = closed.jid.resource().as_str();
                    if user
                        .sessions
                        .get(resource)
                        .is_some_and(|s| s.session_id == closed.session_id)
                    {
                        user.sessions.remove(resource);
                    }
                }
            }
        }
    }

    /// Forgets the users for which `keep` is false (partitions revoked).
    pub fn retain_users(&mut self, mut keep: impl FnMut(&BareJid) -> bool) {
        self.users.retain(|u, _| keep(u));
        self.accounts.retain(|u| keep(u));
    }

    /// The session of a full JID.
    pub fn session(&self, jid: &FullJid) -> Option<&Session> {
        self.users
            .get(&jid.bare())
            .and_then(|u| u.sessions.get(jid.resource().as_str()))
    }

    /// Whether `jid` names an existing account.
    pub fn is_account(&self, jid: &BareJid) -> bool {
        self.accounts.contains(jid)
    }
}

/// The bare part of a JID that has a node (an account address), `None` for a domain.
pub fn account_of(jid: &Jid) -> Option<BareJid> {
    jid.node().is_some().then(|| jid.bare())
}

//! The routing decisions: `(state, event) → (state, outputs)`, no IO.
//!
//! Every stanza is processed twice, each time on the partition owning the state it needs:
//!
//! 1. **Outbound**, on the sender's partition (topic `stanzas`, keyed by the sender):
//!    the sender's roster, sessions and presence change here; presence broadcasts are
//!    fanned out to the subscribed contacts; stanzas for the server are answered.
//! 2. **Inbound**, on the recipient's partition (topic `routed`, keyed by the recipient,
//!    or at once when there is a single partition): the stanza is delivered to the
//!    recipient's sessions following RFC 6121 §8.5, or answered with an error; inbound
//!    subscription requests change the recipient's roster.
//!
//! Outputs carry ids derived from the id of the event that caused them (UUID v5), so
//! reprocessing an event after a restart produces the same ids.

use std::collections::{BTreeSet, HashMap, VecDeque};

use imbus_core::{
    ArchivedMessage, Availability, BareJid, ClientFeatures, ComplianceRecord, Delivery, Direction,
    FullJid, GatewayId, Jid, MessageType, OfflineDelivered, OfflineEvent, OfflineStored, Origin,
    RosterChanged, SessionClosed, SessionEvent, SessionId, SessionPresence, SessionState,
    StanzaKind, StanzaReceived, Subscription, Timestamp, ToBare, UserDataChanged, Uuid,
};
use imbus_xmpp_stream::{
    Element, StanzaError, StanzaErrorCondition, StanzaErrorType, error_reply, ns,
};

use crate::state::{BLOCKLIST_KEY, Item, Lock, Presence, Session, State, Taken, account_of};

const NS_ROSTER: &str = "jabber:iq:roster";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_PING: &str = "urn:xmpp:ping";
const NS_VERSION: &str = "jabber:iq:version";
const NS_VCARD: &str = "vcard-temp";
const NS_DELAY: &str = "urn:xmpp:delay";
const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_BLOCKING: &str = "urn:xmpp:blocking";
const NS_ADDRESS: &str = "http://jabber.org/protocol/address";
/// Most addresses one multicast message may carry (XEP-0033).
const MAX_MULTICAST_ADDRESSES: usize = 1000;
const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_HINTS: &str = "urn:xmpp:hints";
const NS_OFFLINE: &str = "msgoffline";
const NS_PRIVATE: &str = "jabber:iq:private";
/// XEP-0313 Message Archive Management.
pub const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";

/// Settings of the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// The served domain.
    pub domain: BareJid,
    /// Answer XEP-0092 software version requests (off by default: it tells attackers
    /// what runs).
    pub version_enabled: bool,
    /// The name and version reported when [`Self::version_enabled`].
    pub version: String,
    /// Store messages for accounts with no available resource and deliver them at the
    /// next login (XEP-0160, default on). When off, the sender gets
    /// `service-unavailable`.
    pub offline_enabled: bool,
    /// Most messages stored for one account (default 1000); more are refused with
    /// `resource-constraint`.
    pub offline_quota: usize,
    /// How long a conversation stays locked to the resource that replied when nothing is
    /// said either way (default 600 s).
    pub lock_idle_timeout: std::time::Duration,
    /// Instant messaging between users (default on); when off, messages are refused with
    /// `service-unavailable` saying so.
    pub im_enabled: bool,
    /// Presence sharing (default on); when off, presence stanzas are refused with
    /// `service-unavailable` saying so.
    pub presence_enabled: bool,
    /// Message Archive Management (XEP-0313, default on): one-to-one messages are
    /// archived per user ([`Output::Archive`]) and archive queries are forwarded to the
    /// archive processor ([`Output::ArchiveQuery`]); when off, neither, and queries get
    /// `service-unavailable`.
    pub mam_enabled: bool,
    /// The domains of the chat service (XEP-0045 rooms: every chat node alias), when
    /// rooms are enabled: stanzas addressed to one of them, its rooms or their occupants
    /// go to the rooms processor ([`Output::ToRooms`]), session ends are relayed to it
    /// ([`Output::SessionClosedToRooms`]) and the server's `disco#items` lists each.
    pub rooms_services: Option<BTreeSet<BareJid>>,
}

impl RouterConfig {
    /// Settings with the defaults.
    pub fn new(domain: BareJid) -> Self {
        Self {
            domain,
            version_enabled: false,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            offline_enabled: true,
            offline_quota: 1000,
            lock_idle_timeout: std::time::Duration::from_secs(600),
            im_enabled: true,
            presence_enabled: true,
            mam_enabled: true,
            rooms_services: None,
        }
    }

    /// The settings of a server configuration (`im.*`, `presence.*`, `offline.*`,
    /// `disco.expose_version`); `None` when its domain is not a valid XMPP domain.
    pub fn from_config(config: &imbus_config::Config) -> Option<Self> {
        let mut router = Self::new(BareJid::new(&config.domain).ok()?);
        let settings = &config.router;
        router.im_enabled = settings.im_enabled;
        router.presence_enabled = settings.presence_enabled;
        router.offline_enabled = settings.offline_enabled;
        router.offline_quota = settings.offline_quota;
        router.lock_idle_timeout = settings.lock_idle_timeout;
        router.version_enabled = settings.expose_version;
        router.mam_enabled = config.mam.enabled;
        if config.rooms.enabled {
            let mut services = BTreeSet::new();
            for domain in config.chat_domains() {
                services.insert(BareJid::new(&domain).ok()?);
            }
            router.rooms_services = Some(services);
        }
        Some(router)
    }
}

/// What the router consumes.
#[derive(Debug, Clone)]
pub enum Input {
    /// A stanza a client sent (topic `stanzas`, sender's partition).
    Outbound(StanzaReceived),
    /// A stanza forwarded to its recipient's partition (topic `routed`).
    Inbound(StanzaReceived),
    /// A session bound, updated or closed (topic `sessions`).
    Session(SessionEvent),
}

/// What the router produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write to a session: topic `deliver.<gateway>`, key the session's full JID.
    Deliver(Delivery),
    /// Forward to the recipient's partition: topic `routed`, key [`StanzaReceived::owner`].
    Route(StanzaReceived),
    /// A roster item changed: topic `rosters`, key `user\u{0}contact`, partition of the user.
    Roster(RosterChanged),
    /// A session's presence or roster interest changed: topic `sessions`, key
    /// [`presence_key`], partition of the user.
    Session(SessionEvent),
    /// The presence record of a session is obsolete: a tombstone under [`presence_key`].
    SessionGone(FullJid),
    /// A message stored for an offline account, or delivered from storage: topic
    /// `offline`, key [`offline_key`], partition of the recipient.
    Offline(OfflineEvent),
    /// An IM delivered to or stored for one recipient (one record per recipient, not per
    /// resource): topic `compliance`, key the recipient's bare JID.
    Compliance(ComplianceRecord),
    /// Stored XML of an account changed: topic `userdata`, key [`user_data_key`],
    /// partition of the user (a tombstone when removed).
    UserData(UserDataChanged),
    /// A message in one user's archive (XEP-0313): topic `archive`, key the owner's
    /// bare JID.
    Archive(ArchivedMessage),
    /// An archive query of a user (an IQ in the `urn:xmpp:mam:2` namespace to the user's
    /// own account), for the archive processor: topic `archive`, key the user's bare JID,
    /// after the archive records written before it.
    ArchiveQuery(StanzaReceived),
    /// A stanza addressed to the chat service, one of its rooms or an occupant, for the
    /// rooms processor: topic `rooms.stanzas`, key `key` (the room's bare JID, or the
    /// service domain for stanzas to the service itself).
    ToRooms {
        /// The partitioning key: see [`rooms_key`].
        key: String,
        /// The stanza as the gateway published it.
        stanza: StanzaReceived,
    },
    /// A client session ended: relayed to every partition of `rooms.stanzas` (after the
    /// session's stanzas forwarded before it), so the rooms processor removes the
    /// session's occupants from the rooms it holds.
    SessionClosedToRooms(SessionClosed),
}

/// The `rooms.stanzas` key of a stanza to `to` at the chat service `service`: the room's
/// bare JID for a room or an occupant, the service domain for the service itself.
pub fn rooms_key(to: &Jid, service: &BareJid) -> String {
    match to.node() {
        Some(node) => format!("{}@{}", node.as_str(), service.as_str()),
        None => service.as_str().to_owned(),
    }
}

/// The compacted key of an offline message.
pub fn offline_key(recipient: &BareJid, message_event_id: &Uuid) -> String {
    format!("{}\u{0}{}", recipient.as_str(), message_event_id)
}

/// The compacted key of an account's stored XML.
pub fn user_data_key(user: &BareJid, namespace: &str) -> String {
    format!("{}\u{0}{}", user.as_str(), namespace)
}

/// The compacted key of the router's presence records of a session (distinct from the
/// gateway's key, the full JID, so a late presence record never hides a closed session).
pub fn presence_key(jid: &FullJid) -> String {
    format!("{}#presence", jid.as_str())
}

/// The compacted key of a roster item.
pub fn roster_key(user: &BareJid, contact: &BareJid) -> String {
    format!("{}\u{0}{}", user.as_str(), contact.as_str())
}

pub use imbus_xmpp_stream::parse_stanza;

/// The compliance record of an IM (a message with a body) for one recipient; `xml` is
/// `element` serialized.
fn archive(
    stanza: &StanzaReceived,
    recipient: &BareJid,
    element: &Element,
    xml: &str,
    out: &mut Out<'_>,
) {
    let text = |name: &str| element.child(name, ns::JABBER_CLIENT).map(|c| c.text());
    let Some(body) = text("body") else {
        return; // chat states, receipts and other payloads are not IMs
    };
    let message_type = match element.attr("type") {
        Some("chat") => MessageType::Chat,
        Some("groupchat") => MessageType::Groupchat,
        Some("headline") => MessageType::Headline,
        _ => MessageType::Normal,
    };
    mam_entry(
        stanza,
        recipient,
        Jid::from(stanza.sender.clone()),
        Direction::Inbound,
        element,
        xml,
        out,
    );
    out.outputs.push(Output::Compliance(ComplianceRecord {
        event_id: stanza.event_id,
        recipient: recipient.clone(),
        sender: Jid::from(stanza.sender.clone()),
        direction: Direction::Inbound,
        timestamp: stanza.received_at,
        message_type,
        thread: text("thread"),
        subject: text("subject"),
        body: Some(body),
        room: None,
        nickname: None,
        xml: xml.to_owned(),
        origin: Origin::Local,
    }));
}

/// The entry of a one-to-one message (`chat` or `normal` with a body, not marked with a
/// XEP-0334 no-store hint) in the archive of `owner` (XEP-0313); `with` is the other
/// party; `xml` is `element` serialized. [`Router::handle`] drops these outputs when
/// archiving is off.
fn mam_entry(
    stanza: &StanzaReceived,
    owner: &BareJid,
    with: Jid,
    direction: Direction,
    element: &Element,
    xml: &str,
    out: &mut Out<'_>,
) {
    let one_to_one = matches!(element.attr("type"), None | Some("chat") | Some("normal"));
    if !one_to_one
        || element.child("body", ns::JABBER_CLIENT).is_none()
        || element.child("no-store", NS_HINTS).is_some()
        || element.child("no-permanent-store", NS_HINTS).is_some()
    {
        return;
    }
    out.outputs.push(Output::Archive(ArchivedMessage {
        archive_id: ArchivedMessage::derive_id(&stanza.event_id, owner, &with.bare()),
        event_id: stanza.event_id,
        owner: owner.clone(),
        with,
        direction,
        timestamp: stanza.received_at,
        xml: xml.to_owned(),
    }));
}

/// The sender's archive entry of a message forwarded to `to` (XEP-0313); `xml` is
/// `element` serialized.
fn mam_sent(sender: &FullJid, to: &Jid, element: &Element, xml: &str, out: &mut Out<'_>) {
    let stanza = StanzaReceived {
        event_id: out.source.event_id,
        gateway_id: out.source.gateway_id.clone(),
        session_id: out.source.session_id.clone(),
        received_at: out.source.received_at,
        sender: sender.clone(),
        recipient: Some(to.clone()),
        kind: StanzaKind::Message,
        stanza_type: None,
        stanza_id: None,
        xml: String::new(),
    };
    let owner = sender.bare();
    mam_entry(
        &stanza,
        &owner,
        to.clone(),
        Direction::Outbound,
        element,
        xml,
        out,
    );
}

/// Parses a stored element (any namespace) back into a tree.
fn parse_fragment(xml: &str) -> Option<Element> {
    let wrapped = format!("<message xmlns='jabber:client'>{xml}</message>");
    parse_stanza(&wrapped).and_then(|m| m.children().next().cloned())
}

/// The id of the delivery of message `message_event_id` to the session `to`.
pub fn message_delivery_id(message_event_id: &Uuid, to: &FullJid) -> Uuid {
    let mut name = Vec::with_capacity(8 + to.as_str().len());
    name.extend_from_slice(b"deliver\0");
    name.extend_from_slice(to.as_str().as_bytes());
    Uuid::new_v5(message_event_id, &name)
}

/// The router: its configuration and the state of its partitions.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    state: State,
    forwarded: Forwarded,
}

/// Messages this router forwarded, parsed, by event id: when the recipient's partition
/// is here too, the inbound half takes the element from here instead of parsing the XML
/// the outbound half wrote. That XML is the serialization of a stanza as the parser built
/// it, which parses back to the same element, so the outputs are the same either way.
/// Only the last [`Forwarded::CAPACITY`] are kept (an entry is taken when used); any
/// other is parsed as usual.
#[derive(Debug, Default)]
struct Forwarded {
    entries: HashMap<Uuid, (String, Element)>,
    order: VecDeque<Uuid>,
}

impl Forwarded {
    const CAPACITY: usize = 4096;

    fn keep(&mut self, event_id: Uuid, xml: String, element: Element) {
        if self.entries.insert(event_id, (xml, element)).is_none() {
            self.order.push_back(event_id);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    /// The element kept for `event_id`, if it was serialized as exactly `xml`.
    fn take(&mut self, event_id: &Uuid, xml: &str) -> Option<Element> {
        if self.entries.get(event_id)?.0 != xml {
            return None;
        }
        self.entries.remove(event_id).map(|(_, element)| element)
    }
}

/// Collects the outputs of one input, numbering them for their derived ids.
struct Out<'a> {
    source: &'a StanzaReceivedRef,
    outputs: Vec<Output>,
    n: u32,
    now: Timestamp,
}

/// What outputs need to know about the event that caused them.
#[derive(Debug, Clone)]
struct StanzaReceivedRef {
    event_id: Uuid,
    /// What output ids are derived from: differs per processing step, so the outbound
    /// and the inbound processing of one stanza (which share its id) never produce the
    /// same output id, nor do the inbound processings for two recipients.
    id_base: Uuid,
    gateway_id: GatewayId,
    session_id: SessionId,
    received_at: Timestamp,
}

impl StanzaReceivedRef {
    fn of(stanza: &StanzaReceived, step: &str) -> Self {
        let mut name = Vec::with_capacity(64);
        name.extend_from_slice(step.as_bytes());
        if let Some(recipient) = &stanza.recipient {
            name.push(0);
            name.extend_from_slice(recipient.as_str().as_bytes());
        }
        Self {
            event_id: stanza.event_id,
            id_base: Uuid::new_v5(&stanza.event_id, &name),
            gateway_id: stanza.gateway_id.clone(),
            session_id: stanza.session_id.clone(),
            received_at: stanza.received_at,
        }
    }
}

impl Out<'_> {
    fn next_id(&mut self) -> Uuid {
        self.n += 1;
        Uuid::new_v5(&self.source.id_base, &self.n.to_be_bytes())
    }

    fn deliver(&mut self, to: &FullJid, session: &Session, xml: String) {
        let event_id = self.next_id();
        self.outputs.push(Output::Deliver(Delivery {
            event_id,
            source_event_id: self.source.event_id,
            to: to.clone(),
            gateway_id: session.gateway_id.clone(),
            session_id: session.session_id.clone(),
            xml,
            delayed_from: None,
            copies: Vec::new(),
        }));
    }

    /// Delivers a message's own content to a session. The id depends only on the message
    /// and the session's full JID, not on the path that led there (directly, forked, by
    /// lock-on-reply or from offline storage): if the message is processed again after a
    /// crash and takes another path, the gateway still recognises the repeat.
    fn deliver_message(
        &mut self,
        message_event_id: Uuid,
        to: &FullJid,
        session: &Session,
        xml: String,
        delayed_from: Option<Timestamp>,
    ) {
        self.n += 1;
        self.outputs.push(Output::Deliver(Delivery {
            event_id: message_delivery_id(&message_event_id, to),
            source_event_id: message_event_id,
            to: to.clone(),
            gateway_id: session.gateway_id.clone(),
            session_id: session.session_id.clone(),
            xml,
            delayed_from,
            copies: Vec::new(),
        }));
    }

    /// Forwards `stanza` to the partition of `recipient`.
    fn route(&mut self, sender: &FullJid, recipient: Jid, stanza: &Element) {
        let event_id = self.next_id();
        self.route_with_id(event_id, sender, recipient, stanza);
    }

    /// Forwards the client's stanza itself to its recipient's partition, under the id it
    /// was received with (compliance records and offline storage refer to that id);
    /// `xml` is `stanza` serialized.
    fn forward(&mut self, sender: &FullJid, recipient: Jid, stanza: &Element, xml: String) {
        let event_id = self.source.event_id;
        self.route_serialized(event_id, sender, recipient, stanza, xml);
    }

    fn route_with_id(
        &mut self,
        event_id: Uuid,
        sender: &FullJid,
        recipient: Jid,
        stanza: &Element,
    ) {
        self.route_serialized(event_id, sender, recipient, stanza, stanza.to_xml());
    }

    /// [`Out::route_with_id`] with `stanza` already serialized as `xml`.
    fn route_serialized(
        &mut self,
        event_id: Uuid,
        sender: &FullJid,
        recipient: Jid,
        stanza: &Element,
        xml: String,
    ) {
        let kind = match stanza.name() {
            "message" => StanzaKind::Message,
            "presence" => StanzaKind::Presence,
            _ => StanzaKind::Iq,
        };
        self.outputs.push(Output::Route(StanzaReceived {
            event_id,
            gateway_id: self.source.gateway_id.clone(),
            session_id: self.source.session_id.clone(),
            received_at: self.source.received_at,
            sender: sender.clone(),
            recipient: Some(recipient),
            kind,
            stanza_type: stanza.attr("type").map(str::to_owned),
            stanza_id: stanza.attr("id").map(str::to_owned),
            xml,
        }));
    }
}

fn with_to(mut element: Element, to: &str) -> Element {
    element.set_attr("to", to);
    element
}

fn iq_result(request: &Element, to: &str, from: Option<&str>) -> Element {
    let mut result = Element::new("iq", ns::JABBER_CLIENT)
        .with_attr("type", "result")
        .with_attr("to", to);
    if let Some(id) = request.attr("id") {
        result.set_attr("id", id);
    }
    if let Some(from) = from {
        result.set_attr("from", from);
    }
    result
}

fn error(condition: StanzaErrorCondition) -> StanzaError {
    StanzaError::new(condition)
}

fn availability_of(presence: &Element) -> Availability {
    match presence
        .child("show", ns::JABBER_CLIENT)
        .map(|s| s.text())
        .as_deref()
    {
        Some("away") => Availability::Away,
        Some("chat") => Availability::Chat,
        Some("xa") => Availability::ExtendedAway,
        Some("dnd") => Availability::DoNotDisturb,
        _ => Availability::Available,
    }
}

fn priority_of(presence: &Element) -> i8 {
    presence
        .child("priority", ns::JABBER_CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0)
}

/// The presence stanza of a session, from `from`, without `to`.
fn presence_stanza(presence: &Presence, from: &FullJid) -> Element {
    if let Some(xml) = &presence.xml
        && let Some(mut element) = parse_stanza(xml)
    {
        element.remove_attr("to");
        element.set_attr("from", from.as_str());
        return element;
    }
    let mut element = Element::new("presence", ns::JABBER_CLIENT).with_attr("from", from.as_str());
    let show = match presence.availability {
        Availability::Away => Some("away"),
        Availability::Chat => Some("chat"),
        Availability::ExtendedAway => Some("xa"),
        Availability::DoNotDisturb => Some("dnd"),
        Availability::Available | Availability::Unavailable => None,
    };
    if let Some(show) = show {
        element.push_child(Element::new("show", ns::JABBER_CLIENT).with_text(show));
    }
    if let Some(status) = &presence.status {
        element.push_child(Element::new("status", ns::JABBER_CLIENT).with_text(status));
    }
    if presence.priority != 0 {
        element.push_child(
            Element::new("priority", ns::JABBER_CLIENT).with_text(presence.priority.to_string()),
        );
    }
    element
}

fn presence_of_type(kind: &str, from: &str, to: &str) -> Element {
    Element::new("presence", ns::JABBER_CLIENT)
        .with_attr("type", kind)
        .with_attr("from", from)
        .with_attr("to", to)
}

fn subscription_str(s: Subscription) -> &'static str {
    match s {
        Subscription::None => "none",
        Subscription::To => "to",
        Subscription::From => "from",
        Subscription::Both => "both",
        Subscription::Remove => "remove",
    }
}

fn item_element(contact: &BareJid, item: &Item) -> Element {
    let mut element = Element::new("item", NS_ROSTER)
        .with_attr("jid", contact.as_str())
        .with_attr("subscription", subscription_str(item.subscription));
    if let Some(name) = &item.name {
        element.set_attr("name", name);
    }
    if item.ask_out && item.on_roster() {
        element.set_attr("ask", "subscribe");
    }
    if item.approved && item.on_roster() {
        element.set_attr("approved", "true");
    }
    for group in &item.groups {
        element.push_child(Element::new("group", NS_ROSTER).with_text(group));
    }
    element
}

impl Router {
    /// A router with empty state.
    pub fn new(config: RouterConfig) -> Self {
        Self {
            config,
            state: State::default(),
            forwarded: Forwarded::default(),
        }
    }

    /// Forgets the messages kept parsed between the outbound and the inbound half, as a
    /// router holding only the sender's partition would not have them.
    #[cfg(test)]
    pub(crate) fn forget_forwarded(&mut self) {
        self.forwarded = Forwarded::default();
    }

    /// How many forwarded messages are kept parsed.
    #[cfg(test)]
    pub(crate) fn forwarded_kept(&self) -> usize {
        self.forwarded.entries.len()
    }

    /// The settings.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The settings (some can change while the router runs).
    pub fn config_mut(&mut self) -> &mut RouterConfig {
        &mut self.config
    }

    /// The state (restoring folds changelog records into it).
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Processes one input and returns what to write, in order.
    pub fn handle(&mut self, input: Input, now: Timestamp) -> Vec<Output> {
        let mut outputs = match input {
            Input::Outbound(stanza) => self.outbound(stanza, now),
            Input::Inbound(stanza) => self.inbound(stanza, now),
            Input::Session(event) => self.session_event(event, now),
        };
        if !self.config.mam_enabled {
            outputs.retain(|o| !matches!(o, Output::Archive(_)));
        }
        outputs
    }

    fn is_local_domain(&self, jid: &Jid) -> bool {
        jid.domain().as_str() == self.config.domain.as_str()
    }

    /// The chat service domain `jid` is at, if it is at one.
    fn rooms_service_of(&self, jid: &Jid) -> Option<&BareJid> {
        self.config
            .rooms_services
            .as_ref()?
            .iter()
            .find(|service| service.domain() == jid.domain())
    }

    fn is_server(&self, jid: &Jid) -> bool {
        jid.node().is_none() && jid.resource().is_none() && self.is_local_domain(jid)
    }

    // ----- sessions -----

    fn session_event(&mut self, event: SessionEvent, now: Timestamp) -> Vec<Output> {
        let (gateway_id, session_id) = event.session();
        let at = match &event {
            SessionEvent::Bound(s) | SessionEvent::Updated(s) => s.at,
            SessionEvent::Closed(c) => c.at,
        };
        let session_event_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, session_id.as_str().as_bytes());
        let source = StanzaReceivedRef {
            event_id: session_event_id,
            id_base: session_event_id,
            gateway_id: gateway_id.clone(),
            session_id: session_id.clone(),
            received_at: at,
        };
        let mut out = Out {
            source: &source,
            outputs: Vec::new(),
            n: match &event {
                SessionEvent::Bound(_) => 0,
                SessionEvent::Updated(_) => 1_000_000,
                SessionEvent::Closed(_) => 2_000_000,
            },
            now,
        };
        match &event {
            SessionEvent::Bound(state) => {
                let taken = self.state.take_resource(
                    &state.jid,
                    &state.gateway_id,
                    &state.session_id,
                    state.at,
                );
                match taken {
                    // Closed already, or replaced by the session holding the resource.
                    Taken::Stale => return out.outputs,
                    // Known already: a stanza of the session was read first.
                    Taken::Held(_) => {}
                    Taken::New { replaced } => {
                        if let Some(old) = replaced {
                            // The gateway ended the old session for this one.
                            self.went_unavailable(&state.jid, &old, None, &mut out);
                        }
                    }
                }
                if !self.config.presence_enabled
                    && let Some(session) = self.state.session(&state.jid).cloned()
                {
                    // Without presence no resource ever becomes available: a session
                    // takes the stored messages when it binds.
                    self.flush_offline(&state.jid, &session, &mut out);
                }
            }
            SessionEvent::Updated(_) => {
                // The router's own records: already applied when it wrote them.
            }
            SessionEvent::Closed(closed) => {
                if self.config.rooms_services.is_some() {
                    out.outputs
                        .push(Output::SessionClosedToRooms(closed.clone()));
                }
                self.state.remember_closed(closed.session_id.clone());
                let bare = closed.jid.bare();
                let resource = closed.jid.resource().as_str().to_owned();
                let current = self
                    .state
                    .users
                    .get(&bare)
                    .and_then(|u| u.sessions.get(&resource))
                    .filter(|s| s.session_id == closed.session_id)
                    .cloned();
                if let Some(session) = current {
                    if let Some(user) = self.state.users.get_mut(&bare) {
                        user.sessions.remove(&resource);
                    }
                    self.went_unavailable(&closed.jid, &session, None, &mut out);
                    out.outputs.push(Output::SessionGone(closed.jid.clone()));
                }
            }
        }
        out.outputs
    }

    /// Broadcasts unavailable presence for a session that was available (closed,
    /// replaced or sent unavailable).
    fn went_unavailable(
        &mut self,
        jid: &FullJid,
        session: &Session,
        stanza: Option<&Element>,
        out: &mut Out<'_>,
    ) {
        // Lock-on-reply ends when the locked resource goes unavailable.
        if let Some(user) = self.state.users.get_mut(&jid.bare()) {
            let resource = jid.resource().as_str();
            user.locks.retain(|_, lock| lock.resource != resource);
        }
        if session.presence.is_none() {
            // Directed presence of an unavailable session still gets its unavailable.
            for target in &session.directed {
                if let Ok(to) = Jid::new(target) {
                    let el = presence_of_type("unavailable", jid.as_str(), to.as_str());
                    out.route(jid, to, &el);
                }
            }
            return;
        }
        let base = match stanza {
            Some(s) => {
                let mut s = s.clone();
                s.remove_attr("to");
                s.set_attr("from", jid.as_str());
                s
            }
            None => Element::new("presence", ns::JABBER_CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", jid.as_str()),
        };
        let bare = jid.bare();
        let mut targets: Vec<String> = Vec::new();
        if let Some(user) = self.state.users.get(&bare) {
            for (contact, item) in &user.roster {
                if item.subscription.contact_sees_user()
                    && !user.blocks(&Jid::from(contact.clone()))
                {
                    targets.push(contact.as_str().to_owned());
                }
            }
            for (resource, other, _) in user.available() {
                if resource.as_str() != jid.resource().as_str()
                    && let Ok(full) = bare.with_resource_str(resource)
                {
                    out.deliver(&full, other, with_to(base.clone(), full.as_str()).to_xml());
                }
            }
        }
        for target in &session.directed {
            if !targets.iter().any(|t| t == target) {
                targets.push(target.clone());
            }
        }
        for target in targets {
            if let Ok(to) = Jid::new(&target) {
                out.route(jid, to.clone(), &with_to(base.clone(), to.as_str()));
            }
        }
    }

    fn record_session(&self, jid: &FullJid, session: &Session, out: &mut Out<'_>) {
        out.outputs
            .push(Output::Session(SessionEvent::Updated(SessionState {
                jid: jid.clone(),
                gateway_id: session.gateway_id.clone(),
                session_id: session.session_id.clone(),
                at: out.now,
                presence: session
                    .presence
                    .as_ref()
                    .map(Presence::to_session_presence)
                    .unwrap_or_else(SessionPresence::unavailable),
                features: ClientFeatures {
                    carbons: session.carbons,
                    roster_requested: session.roster_requested,
                },
            })));
    }

    /// The sender's session, learnt from the stanza itself when its `Bound` record has not
    /// been read yet (the two topics are consumed independently); `None` when the session
    /// ended or was replaced. A session that sends from a resource an older session holds
    /// replaced that one ([`State::take_resource`]).
    fn sender_session(&mut self, stanza: &StanzaReceived, out: &mut Out<'_>) -> Option<Session> {
        let taken = self.state.take_resource(
            &stanza.sender,
            &stanza.gateway_id,
            &stanza.session_id,
            stanza.received_at,
        );
        match taken {
            Taken::Stale => None,
            Taken::Held(session) => Some(session),
            Taken::New { replaced } => {
                if let Some(old) = replaced {
                    self.went_unavailable(&stanza.sender, &old, None, out);
                }
                self.state.session(&stanza.sender).cloned()
            }
        }
    }

    // ----- outbound -----

    fn outbound(&mut self, stanza: StanzaReceived, now: Timestamp) -> Vec<Output> {
        let Some(element) = parse_stanza(&stanza.xml) else {
            tracing::warn!(event = %stanza.event_id, "unparsable stanza on the log; skipped");
            return Vec::new();
        };
        let source = StanzaReceivedRef::of(&stanza, "outbound");
        let mut out = Out {
            source: &source,
            outputs: Vec::new(),
            n: 0,
            now,
        };
        if let Some(to) = stanza.recipient.clone()
            && let Some(service) = self.rooms_service_of(&to).cloned()
        {
            // Rooms: decided by the rooms processor, on the room's partition. Once the
            // session has ended only messages go on (a late entry would leave an occupant
            // without a session behind).
            if stanza.kind == StanzaKind::Message
                || self.sender_session(&stanza, &mut out).is_some()
            {
                let key = rooms_key(&to, &service);
                out.outputs.push(Output::ToRooms { key, stanza });
            }
            return out.outputs;
        }
        let Some(session) = self.sender_session(&stanza, &mut out) else {
            // The session closed before its stanza was processed: nobody to answer.
            // Messages still go to their recipients.
            if stanza.kind == StanzaKind::Message
                && let Some(to) = stanza.recipient.clone()
                && account_of(&to).is_some()
                && self.is_local_domain(&to)
            {
                let xml = element.to_xml();
                mam_sent(&stanza.sender, &to, &element, &xml, &mut out);
                let event_id = out.next_id();
                out.route_serialized(event_id, &stanza.sender, to, &element, xml);
            }
            return out.outputs;
        };
        let sender = stanza.sender.clone();
        if let Some(to) = &stanza.recipient
            && self.blocks(&sender.bare(), to)
        {
            // XEP-0191 §3.5: the user cannot talk to whom it blocks.
            if stanza.kind != StanzaKind::Presence
                && let Some(mut reply) = error_reply(
                    &element,
                    &error(StanzaErrorCondition::NotAcceptable).with_type(StanzaErrorType::Cancel),
                )
            {
                if let Some(e) = reply.child_mut("error", ns::JABBER_CLIENT) {
                    e.push_child(Element::new("blocked", NS_BLOCKING_ERRORS));
                }
                self.reply(&sender, &session, reply, &mut out);
            }
            return out.outputs;
        }
        let switched_off = match stanza.kind {
            StanzaKind::Message if !self.config.im_enabled => {
                Some("instant messaging is disabled on this server")
            }
            StanzaKind::Presence if !self.config.presence_enabled => {
                Some("presence is disabled on this server")
            }
            _ => None,
        };
        if let Some(text) = switched_off {
            let e = error(StanzaErrorCondition::ServiceUnavailable)
                .with_type(StanzaErrorType::Cancel)
                .with_text(text);
            self.reply_error(&sender, &session, &element, e, &mut out);
            return out.outputs;
        }
        match stanza.kind {
            StanzaKind::Message => self.outbound_message(&sender, &session, element, &mut out),
            StanzaKind::Presence => self.outbound_presence(&sender, element, &mut out),
            StanzaKind::Iq => self.outbound_iq(&sender, &session, element, &mut out),
        }
        out.outputs
    }

    /// Answers the sender's session directly (errors and results of the outbound phase).
    fn reply(&self, sender: &FullJid, session: &Session, element: Element, out: &mut Out<'_>) {
        out.deliver(sender, session, element.to_xml());
    }

    fn reply_error(
        &self,
        sender: &FullJid,
        session: &Session,
        original: &Element,
        error: StanzaError,
        out: &mut Out<'_>,
    ) {
        if let Some(reply) = error_reply(original, &error) {
            self.reply(sender, session, reply, out);
        }
    }

    fn outbound_message(
        &mut self,
        sender: &FullJid,
        session: &Session,
        element: Element,
        out: &mut Out<'_>,
    ) {
        let to = match element.attr("to").map(Jid::new) {
            None => Jid::from(sender.bare()),
            Some(Ok(to)) => to,
            Some(Err(_)) => return,
        };
        if !self.is_local_domain(&to) {
            let e = error(StanzaErrorCondition::RemoteServerNotFound)
                .with_type(StanzaErrorType::Cancel);
            return self.reply_error(sender, session, &element, e, out);
        }
        if self.is_server(&to) && element.child("addresses", NS_ADDRESS).is_some() {
            return self.multicast(sender, session, element, out);
        }
        if self.is_server(&to) {
            if element.attr("type") != Some("error") && element.attr("type") != Some("headline") {
                let e = error(StanzaErrorCondition::ServiceUnavailable);
                self.reply_error(sender, session, &element, e, out);
            }
            return;
        }
        self.carbon_copies(sender, "sent", &element, std::slice::from_ref(sender), out);
        self.note_reply(sender, &to, &element, out.source.received_at);
        let xml = element.to_xml();
        mam_sent(sender, &to, &element, &xml, out);
        out.forward(sender, to, &element, xml.clone());
        // Parsed from the client's stanza, unchanged: what `xml` parses back to.
        self.forwarded.keep(out.source.event_id, xml, element);
    }

    /// Lock-on-reply: a chat reply from one resource locks the conversation with that
    /// contact to the resource.
    fn note_reply(&mut self, sender: &FullJid, to: &Jid, message: &Element, at: Timestamp) {
        let conversational = matches!(message.attr("type"), None | Some("chat") | Some("normal"))
            && message.child("body", ns::JABBER_CLIENT).is_some();
        if !conversational || to.node().is_none() {
            return;
        }
        let user = self.state.user_mut(&sender.bare());
        user.locks.insert(
            to.bare(),
            Lock {
                resource: sender.resource().as_str().to_owned(),
                last: at,
            },
        );
    }

    /// Restores the conversation locks from a stanza processed before a restart (the
    /// router rereads the last `lock_idle_timeout` of `stanzas`).
    pub fn restore_outbound(&mut self, stanza: &StanzaReceived) {
        if stanza.kind != StanzaKind::Message {
            return;
        }
        let (Some(to), Some(element)) = (&stanza.recipient, parse_stanza(&stanza.xml)) else {
            return;
        };
        self.note_reply(&stanza.sender, to, &element, stanza.received_at);
    }

    /// The resource a conversation from `contact` is locked to, if the lock still holds
    /// (the resource is available and the conversation moved within the idle timeout);
    /// a lock that no longer holds is removed.
    fn locked_resource(
        &mut self,
        user: &BareJid,
        contact: &BareJid,
        at: Timestamp,
    ) -> Option<String> {
        let timeout = self.config.lock_idle_timeout;
        let u = self.state.users.get_mut(user)?;
        let lock = u.locks.get(contact)?.clone();
        let fresh = at.since(lock.last).is_none_or(|idle| idle <= timeout);
        let presence_enabled = self.config.presence_enabled;
        let available = u
            .sessions
            .get(&lock.resource)
            .is_some_and(|s| s.presence.is_some() || !presence_enabled);
        if fresh && available {
            if let Some(l) = u.locks.get_mut(contact) {
                l.last = l.last.max(at);
            }
            Some(lock.resource)
        } else {
            u.locks.remove(contact);
            None
        }
    }

    /// XEP-0033: one copy of the message for each `to`, `cc` and `bcc` address, each
    /// forwarded to its recipient's partition (delivered or stored there, and archived
    /// per recipient). `bcc` addresses are removed from every copy; every address handled
    /// here is marked `delivered`.
    fn multicast(
        &mut self,
        sender: &FullJid,
        session: &Session,
        element: Element,
        out: &mut Out<'_>,
    ) {
        let Some(addresses) = element.child("addresses", NS_ADDRESS).cloned() else {
            return;
        };
        let bad = |text: &str| {
            error(StanzaErrorCondition::BadRequest)
                .with_type(StanzaErrorType::Modify)
                .with_text(text)
        };
        let mut targets: Vec<Jid> = Vec::new();
        let mut remote: Vec<String> = Vec::new();
        for address in addresses.children().filter(|a| a.name() == "address") {
            if !matches!(address.attr("type"), Some("to" | "cc" | "bcc"))
                || address.attr("delivered") == Some("true")
            {
                continue;
            }
            let Some(jid) = address.attr("jid") else {
                continue; // a URI address: nothing this server can deliver
            };
            let Ok(jid) = Jid::new(jid) else {
                let e = error(StanzaErrorCondition::JidMalformed)
                    .with_type(StanzaErrorType::Modify)
                    .with_text(format!("not a JID: {jid}"));
                return self.reply_error(sender, session, &element, e, out);
            };
            if !self.is_local_domain(&jid) || jid.node().is_none() {
                remote.push(jid.as_str().to_owned());
            } else if !targets.contains(&jid) {
                targets.push(jid);
            }
        }
        if targets.len() + remote.len() > MAX_MULTICAST_ADDRESSES {
            let e = bad(&format!(
                "at most {MAX_MULTICAST_ADDRESSES} addresses per message"
            ));
            return self.reply_error(sender, session, &element, e, out);
        }
        if targets.is_empty() && remote.is_empty() {
            return self.reply_error(
                sender,
                session,
                &element,
                bad("no address to deliver to"),
                out,
            );
        }
        // The addresses every recipient sees: without bcc, marked delivered.
        let mut visible = Element::new("addresses", NS_ADDRESS);
        for address in addresses.children() {
            if address.attr("type") == Some("bcc") {
                continue;
            }
            let mut a = address.clone();
            if matches!(a.attr("type"), Some("to" | "cc")) {
                a.set_attr("delivered", "true");
            }
            visible.push_child(a);
        }
        let mut base = element.clone();
        base.nodes_mut().retain(
            |n| !matches!(n, imbus_xmpp_stream::Node::Element(e) if e.is("addresses", NS_ADDRESS)),
        );
        base.push_child(visible);
        for target in targets {
            let copy = with_to(base.clone(), target.as_str());
            if self.blocks(&sender.bare(), &target) {
                continue;
            }
            let xml = copy.to_xml();
            mam_sent(sender, &target, &copy, &xml, out);
            out.forward(sender, target, &copy, xml);
        }
        if !remote.is_empty() {
            let e = error(StanzaErrorCondition::RemoteServerNotFound)
                .with_type(StanzaErrorType::Cancel)
                .with_text(format!(
                    "not delivered (no federation): {}",
                    remote.join(", ")
                ));
            self.reply_error(sender, session, &element, e, out);
        }
    }

    /// XEP-0280: copies of a chat message for the user's other sessions that enabled
    /// carbons (`sent` for what the user sent, `received` for what it received), except
    /// `exclude` (the sessions that got the message itself).
    fn carbon_copies(
        &mut self,
        owner: &FullJid,
        direction: &str,
        message: &Element,
        exclude: &[FullJid],
        out: &mut Out<'_>,
    ) {
        let eligible = match message.attr("type") {
            Some("chat") => true,
            None | Some("normal") => message.child("body", ns::JABBER_CLIENT).is_some(),
            _ => false,
        };
        if !eligible
            || message.child("private", NS_CARBONS).is_some()
            || message.child("no-copy", NS_HINTS).is_some()
        {
            return;
        }
        let bare = owner.bare();
        let Some(user) = self.state.users.get(&bare) else {
            return;
        };
        let copies: Vec<(FullJid, Session)> = user
            .sessions
            .iter()
            .filter(|(_, s)| s.carbons)
            .filter_map(|(r, s)| bare.with_resource_str(r).ok().map(|f| (f, s.clone())))
            .filter(|(f, _)| !exclude.contains(f))
            .collect();
        for (full, session) in copies {
            let wrapper =
                Element::new("message", ns::JABBER_CLIENT)
                    .with_attr("from", bare.as_str())
                    .with_attr("to", full.as_str())
                    .with_attr("type", message.attr("type").unwrap_or("normal"))
                    .with_child(Element::new(direction, NS_CARBONS).with_child(
                        Element::new("forwarded", NS_FORWARD).with_child(message.clone()),
                    ));
            out.deliver(&full, &session, wrapper.to_xml());
        }
    }

    fn outbound_presence(&mut self, sender: &FullJid, element: Element, out: &mut Out<'_>) {
        let kind = element.attr("type").unwrap_or("available").to_owned();
        let to = match element.attr("to").map(Jid::new) {
            None => None,
            Some(Ok(to)) => Some(to),
            Some(Err(_)) => return,
        };
        match (kind.as_str(), to) {
            ("available" | "unavailable", None) => {
                self.broadcast(sender, element, kind == "unavailable", out)
            }
            ("available" | "unavailable", Some(to)) => {
                if !self.is_local_domain(&to) || self.is_server(&to) {
                    return;
                }
                let user = self.state.user_mut(&sender.bare());
                let to_bare = to.bare();
                let subscribed = user
                    .roster
                    .get(&to_bare)
                    .is_some_and(|i| i.subscription.contact_sees_user());
                if let Some(s) = user.sessions.get_mut(sender.resource().as_str())
                    && !subscribed
                {
                    if kind == "unavailable" {
                        s.directed.remove(to.as_str());
                    } else {
                        s.directed.insert(to.as_str().to_owned());
                    }
                }
                out.route(sender, to, &element);
            }
            ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", Some(to)) => {
                if to.node().is_none() || !self.is_local_domain(&to) {
                    return;
                }
                self.outbound_subscription(sender, &kind, to.bare(), element, out);
            }
            ("probe", Some(to)) if to.node().is_some() && self.is_local_domain(&to) => {
                let probe = presence_of_type("probe", sender.as_str(), to.bare().as_str());
                out.route(sender, Jid::from(to.bare()), &probe);
            }
            _ => {}
        }
    }

    /// Presence without `to`: the session's availability, broadcast to subscribers.
    fn broadcast(
        &mut self,
        sender: &FullJid,
        element: Element,
        unavailable: bool,
        out: &mut Out<'_>,
    ) {
        let bare = sender.bare();
        let resource = sender.resource().as_str().to_owned();
        let Some(session) = self
            .state
            .users
            .get(&bare)
            .and_then(|u| u.sessions.get(&resource))
            .cloned()
        else {
            return;
        };
        if unavailable {
            self.went_unavailable(sender, &session, Some(&element), out);
            if let Some(s) = self
                .state
                .users
                .get_mut(&bare)
                .and_then(|u| u.sessions.get_mut(&resource))
            {
                s.presence = None;
                s.directed.clear();
                let s = s.clone();
                self.record_session(sender, &s, out);
            }
            return;
        }
        let initial = session.presence.is_none();
        let mut stored = element.clone();
        stored.remove_attr("to");
        stored.set_attr("from", sender.as_str());
        let presence = Presence {
            availability: availability_of(&element),
            priority: priority_of(&element),
            status: element.child("status", ns::JABBER_CLIENT).map(|s| s.text()),
            xml: Some(stored.to_xml()),
        };
        let Some(user) = self.state.users.get_mut(&bare) else {
            return;
        };
        let Some(s) = user.sessions.get_mut(&resource) else {
            return;
        };
        s.presence = Some(presence);
        let s = s.clone();
        self.record_session(sender, &s, out);
        let Some(user) = self.state.users.get(&bare).cloned() else {
            return;
        };
        // To the subscribed contacts.
        for (contact, item) in &user.roster {
            if item.subscription.contact_sees_user() && !user.blocks(&Jid::from(contact.clone())) {
                let to = Jid::from(contact.clone());
                out.route(sender, to, &with_to(stored.clone(), contact.as_str()));
            }
        }
        // To every available resource of the user, this one included.
        for (r, other, _) in user.available() {
            if let Ok(full) = bare.with_resource_str(r) {
                out.deliver(
                    &full,
                    other,
                    with_to(stored.clone(), full.as_str()).to_xml(),
                );
            }
        }
        if initial {
            // Probes for the contacts the user is subscribed to.
            for (contact, item) in &user.roster {
                if item.subscription.user_sees_contact()
                    && !user.blocks(&Jid::from(contact.clone()))
                {
                    let probe = presence_of_type("probe", sender.as_str(), contact.as_str());
                    out.route(sender, Jid::from(contact.clone()), &probe);
                }
            }
            // The presence of the user's other available resources.
            for (r, _, p) in user.available() {
                if r.as_str() != resource
                    && let Ok(full) = bare.with_resource_str(r)
                {
                    let el = with_to(presence_stanza(p, &full), sender.as_str());
                    out.deliver(sender, &s, el.to_xml());
                }
            }
            // Subscription requests that waited for the user (RFC 6121 §3.1.3).
            for item in user.roster.values() {
                if let Some(request) = &item.pending_in {
                    out.deliver(sender, &s, request.clone());
                }
            }
        }
        if s.presence.as_ref().is_some_and(|p| p.priority >= 0) {
            self.flush_offline(sender, &s, out);
        }
    }

    fn emit_roster(
        &mut self,
        user: &BareJid,
        contact: &BareJid,
        item: &Item,
        push: bool,
        out: &mut Out<'_>,
    ) {
        out.outputs.push(Output::Roster(RosterChanged {
            user: user.clone(),
            contact: contact.clone(),
            name: item.name.clone(),
            groups: item.groups.clone(),
            subscription: item.subscription,
            ask_out: item.ask_out,
            pending_in: item.pending_in.clone(),
            approved: item.approved,
            at: out.now,
        }));
        let stored = self.state.user_mut(user);
        if item.is_void() {
            stored.roster.remove(contact);
        } else {
            stored.roster.insert(contact.clone(), item.clone());
        }
        if push {
            self.push_roster(user, contact, item, out);
        }
    }

    /// Roster push to every session that asked for the roster (RFC 6121 §2.1.6).
    fn push_roster(&mut self, user: &BareJid, contact: &BareJid, item: &Item, out: &mut Out<'_>) {
        let Some(u) = self.state.users.get(user) else {
            return;
        };
        let sessions: Vec<(String, Session)> = u
            .sessions
            .iter()
            .filter(|(_, s)| s.roster_requested)
            .map(|(r, s)| (r.clone(), s.clone()))
            .collect();
        for (resource, session) in sessions {
            let Ok(full) = user.with_resource_str(&resource) else {
                continue;
            };
            let id = format!("push-{}", out.next_id().simple());
            let push = Element::new("iq", ns::JABBER_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", id)
                .with_attr("to", full.as_str())
                .with_child(
                    Element::new("query", NS_ROSTER).with_child(item_element(contact, item)),
                );
            out.deliver(&full, &session, push.to_xml());
        }
    }

    fn item(&self, user: &BareJid, contact: &BareJid) -> Option<Item> {
        self.state
            .users
            .get(user)
            .and_then(|u| u.roster.get(contact))
            .cloned()
    }

    fn outbound_subscription(
        &mut self,
        sender: &FullJid,
        kind: &str,
        contact: BareJid,
        element: Element,
        out: &mut Out<'_>,
    ) {
        let user = sender.bare();
        if contact == user {
            return;
        }
        // Subscription stanzas travel between bare JIDs (RFC 6121 §3.1.1).
        let mut stanza = element;
        stanza.set_attr("from", user.as_str());
        stanza.set_attr("to", contact.as_str());
        let existing = self.item(&user, &contact);
        let mut item = existing.clone().unwrap_or_else(|| {
            let mut i = Item::empty();
            i.subscription = Subscription::Remove;
            i
        });
        match kind {
            "subscribe" => {
                if item.subscription == Subscription::Remove {
                    item.subscription = Subscription::None;
                }
                if !item.subscription.user_sees_contact() {
                    item.ask_out = true;
                }
                if existing.as_ref() != Some(&item) {
                    self.emit_roster(&user, &contact, &item, true, out);
                }
                out.route(sender, Jid::from(contact), &stanza);
            }
            "subscribed" => {
                if item.subscription.contact_sees_user() {
                    return;
                }
                if item.pending_in.is_some() {
                    item.add_subscriber();
                    item.pending_in = None;
                    item.approved = false;
                    self.emit_roster(&user, &contact, &item, true, out);
                    out.route(sender, Jid::from(contact.clone()), &stanza);
                    // The new subscriber gets the user's current presence.
                    self.share_presence(&user, &Jid::from(contact.clone()), out);
                } else if !item.approved {
                    // Pre-approval (RFC 6121 §3.4).
                    if item.subscription == Subscription::Remove {
                        item.subscription = Subscription::None;
                    }
                    item.approved = true;
                    self.emit_roster(&user, &contact, &item, true, out);
                }
            }
            "unsubscribe" => {
                let before = item.clone();
                item.drop_subscription();
                item.ask_out = false;
                if existing.is_some() && before != item {
                    self.emit_roster(&user, &contact, &item, item.on_roster(), out);
                }
                out.route(sender, Jid::from(contact), &stanza);
            }
            _ => {
                // unsubscribed: cancel or refuse the contact's subscription.
                let before = item.clone();
                item.drop_subscriber();
                item.pending_in = None;
                item.approved = false;
                if existing.is_some() && before != item {
                    self.emit_roster(&user, &contact, &item, item.on_roster(), out);
                }
                out.route(sender, Jid::from(contact.clone()), &stanza);
                if before.subscription.contact_sees_user()
                    && let Some(u) = self.state.users.get(&user)
                {
                    for (r, _, _) in u.available() {
                        if let Ok(full) = user.with_resource_str(r) {
                            let el =
                                presence_of_type("unavailable", full.as_str(), contact.as_str());
                            out.route(&full, Jid::from(contact.clone()), &el);
                        }
                    }
                }
            }
        }
    }

    fn outbound_iq(
        &mut self,
        sender: &FullJid,
        session: &Session,
        element: Element,
        out: &mut Out<'_>,
    ) {
        let kind = element.attr("type").unwrap_or("").to_owned();
        let request = kind == "get" || kind == "set";
        let to = match element.attr("to").map(Jid::new) {
            None => None,
            Some(Ok(to)) => Some(to),
            Some(Err(_)) => return,
        };
        let own_bare = sender.bare();
        match to {
            None => self.server_iq(sender, session, &element, true, out),
            Some(to) if to.is_bare() && to.bare() == own_bare => {
                self.server_iq(sender, session, &element, true, out)
            }
            Some(to) if self.is_server(&to) => {
                self.server_iq(sender, session, &element, false, out)
            }
            Some(to) if !self.is_local_domain(&to) => {
                if request {
                    let e = error(StanzaErrorCondition::RemoteServerNotFound)
                        .with_type(StanzaErrorType::Cancel);
                    self.reply_error(sender, session, &element, e, out);
                }
            }
            Some(to) if to.node().is_none() => {
                // Another address of the server (a resource of the domain).
                if request {
                    let e = error(StanzaErrorCondition::ServiceUnavailable);
                    self.reply_error(sender, session, &element, e, out);
                }
            }
            Some(to) => out.route(sender, to, &element),
        }
    }

    /// An IQ the server answers: to the server itself, or to the sender's own account.
    fn server_iq(
        &mut self,
        sender: &FullJid,
        session: &Session,
        element: &Element,
        own_account: bool,
        out: &mut Out<'_>,
    ) {
        let kind = element.attr("type").unwrap_or("");
        if kind != "get" && kind != "set" {
            return; // results and errors (roster push answers, …) end here
        }
        let from = if own_account {
            None
        } else {
            Some(self.config.domain.as_str().to_owned())
        };
        let payload = element.children().next();
        let (name, namespace) = payload
            .map(|p| (p.name(), p.namespace()))
            .unwrap_or(("", ""));
        match (kind, name, namespace) {
            (_, "query", NS_ROSTER) if own_account || element.attr("to").is_none() => {
                self.roster_iq(sender, session, element, out)
            }
            ("set", "enable" | "disable", NS_CARBONS)
                if element.attr("to").is_none() || !own_account =>
            {
                let enable = name == "enable";
                let resource = sender.resource().as_str();
                if let Some(s) = self
                    .state
                    .users
                    .get_mut(&sender.bare())
                    .and_then(|u| u.sessions.get_mut(resource))
                    && s.carbons != enable
                {
                    s.carbons = enable;
                    let s = s.clone();
                    self.record_session(sender, &s, out);
                }
                let result = iq_result(element, sender.as_str(), from.as_deref());
                self.reply(sender, session, result, out);
            }
            (_, _, NS_MAM) if own_account && self.config.mam_enabled => {
                // Answered by the archive processor, which holds the user's archive.
                out.outputs.push(Output::ArchiveQuery(StanzaReceived {
                    event_id: out.source.event_id,
                    gateway_id: out.source.gateway_id.clone(),
                    session_id: out.source.session_id.clone(),
                    received_at: out.source.received_at,
                    sender: sender.clone(),
                    recipient: Some(Jid::from(sender.bare())),
                    kind: StanzaKind::Iq,
                    stanza_type: Some(kind.to_owned()),
                    stanza_id: element.attr("id").map(str::to_owned),
                    xml: element.to_xml(),
                }));
            }
            (_, "blocklist" | "block" | "unblock", NS_BLOCKING) if own_account => {
                self.blocking_iq(sender, session, element, out)
            }
            (_, "vCard", NS_VCARD) if own_account => {
                self.stored_xml_iq(sender, session, element, NS_VCARD.to_owned(), out)
            }
            (_, "query", NS_PRIVATE) if own_account => {
                // XEP-0049: one child element, stored by its namespace.
                let Some(child) = payload.and_then(|p| p.children().next()) else {
                    let e = error(StanzaErrorCondition::BadRequest)
                        .with_type(StanzaErrorType::Modify)
                        .with_text("private storage needs one child element");
                    return self.reply_error(sender, session, element, e, out);
                };
                if child.namespace().starts_with("jabber:") {
                    // XEP-0049 §3: the jabber: namespaces are reserved.
                    let e = error(StanzaErrorCondition::NotAcceptable);
                    return self.reply_error(sender, session, element, e, out);
                }
                let key = format!("{NS_PRIVATE}#{}#{}", child.namespace(), child.name());
                self.stored_xml_iq(sender, session, element, key, out)
            }
            ("get", "query", NS_DISCO_INFO) => {
                let mut query = Element::new("query", NS_DISCO_INFO);
                if let Some(node) = payload.and_then(|p| p.attr("node")) {
                    query.set_attr("node", node);
                    let e = error(StanzaErrorCondition::ItemNotFound);
                    return self.reply_error(sender, session, element, e, out);
                }
                if own_account {
                    query.push_child(
                        Element::new("identity", NS_DISCO_INFO)
                            .with_attr("category", "account")
                            .with_attr("type", "registered"),
                    );
                    query.push_child(
                        Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_INFO),
                    );
                    if self.config.mam_enabled {
                        for feature in [NS_MAM, NS_MAM_EXTENDED] {
                            query.push_child(
                                Element::new("feature", NS_DISCO_INFO).with_attr("var", feature),
                            );
                        }
                    }
                } else {
                    query.push_child(
                        Element::new("identity", NS_DISCO_INFO)
                            .with_attr("category", "server")
                            .with_attr("type", "im")
                            .with_attr("name", "imbus"),
                    );
                    for feature in self.server_features() {
                        query.push_child(
                            Element::new("feature", NS_DISCO_INFO).with_attr("var", feature),
                        );
                    }
                }
                let result = iq_result(element, sender.as_str(), from.as_deref()).with_child(query);
                self.reply(sender, session, result, out);
            }
            ("get", "query", NS_DISCO_ITEMS) => {
                let mut query = Element::new("query", NS_DISCO_ITEMS);
                if !own_account && let Some(services) = &self.config.rooms_services {
                    for service in services {
                        query.push_child(
                            Element::new("item", NS_DISCO_ITEMS)
                                .with_attr("jid", service.as_str())
                                .with_attr("name", "Chat rooms"),
                        );
                    }
                }
                let result = iq_result(element, sender.as_str(), from.as_deref()).with_child(query);
                self.reply(sender, session, result, out);
            }
            ("get", "ping", NS_PING) => {
                let result = iq_result(element, sender.as_str(), from.as_deref());
                self.reply(sender, session, result, out);
            }
            ("get", "query", NS_VERSION) if !own_account && self.config.version_enabled => {
                let query = Element::new("query", NS_VERSION)
                    .with_child(Element::new("name", NS_VERSION).with_text("imbus"))
                    .with_child(
                        Element::new("version", NS_VERSION).with_text(&self.config.version),
                    );
                let result = iq_result(element, sender.as_str(), from.as_deref()).with_child(query);
                self.reply(sender, session, result, out);
            }
            _ => {
                let e = error(StanzaErrorCondition::ServiceUnavailable);
                self.reply_error(sender, session, element, e, out);
            }
        }
    }

    /// XEP-0191: the block list — get, block, unblock — with pushes to the user's
    /// sessions and the presence consequences.
    fn blocking_iq(
        &mut self,
        sender: &FullJid,
        session: &Session,
        element: &Element,
        out: &mut Out<'_>,
    ) {
        let user = sender.bare();
        let Some(payload) = element.children().next() else {
            return;
        };
        let kind = element.attr("type").unwrap_or("");
        let current = self
            .state
            .users
            .get(&user)
            .map(|u| u.blocked.clone())
            .unwrap_or_default();
        if kind == "get" {
            if payload.name() != "blocklist" {
                let e = error(StanzaErrorCondition::BadRequest).with_type(StanzaErrorType::Modify);
                return self.reply_error(sender, session, element, e, out);
            }
            let mut list = Element::new("blocklist", NS_BLOCKING);
            for jid in &current {
                list.push_child(Element::new("item", NS_BLOCKING).with_attr("jid", jid));
            }
            let result = iq_result(element, sender.as_str(), None).with_child(list);
            return self.reply(sender, session, result, out);
        }
        let mut items = Vec::new();
        for item in payload.children().filter(|c| c.name() == "item") {
            match item.attr("jid").map(Jid::new) {
                Some(Ok(jid)) => items.push(jid),
                _ => {
                    let e = error(StanzaErrorCondition::JidMalformed)
                        .with_type(StanzaErrorType::Modify);
                    return self.reply_error(sender, session, element, e, out);
                }
            }
        }
        let mut blocked = current.clone();
        match payload.name() {
            "block" if items.is_empty() => {
                let e = error(StanzaErrorCondition::BadRequest)
                    .with_type(StanzaErrorType::Modify)
                    .with_text("block needs at least one item");
                return self.reply_error(sender, session, element, e, out);
            }
            "block" => blocked.extend(items.iter().map(|j| j.as_str().to_owned())),
            "unblock" if items.is_empty() => blocked.clear(),
            "unblock" => {
                for jid in &items {
                    blocked.remove(jid.as_str());
                }
            }
            _ => {
                let e = error(StanzaErrorCondition::BadRequest).with_type(StanzaErrorType::Modify);
                return self.reply_error(sender, session, element, e, out);
            }
        }
        let newly: Vec<String> = blocked.difference(&current).cloned().collect();
        let freed: Vec<String> = current.difference(&blocked).cloned().collect();
        let mut list = Element::new("blocklist", NS_BLOCKING);
        for jid in &blocked {
            list.push_child(Element::new("item", NS_BLOCKING).with_attr("jid", jid));
        }
        let xml = list.to_xml();
        self.state
            .user_mut(&user)
            .data
            .insert(BLOCKLIST_KEY.to_owned(), xml.clone());
        self.state.user_mut(&user).blocked = blocked;
        out.outputs.push(Output::UserData(UserDataChanged {
            user: user.clone(),
            namespace: BLOCKLIST_KEY.to_owned(),
            xml: Some(xml),
            at: out.now,
        }));
        let result = iq_result(element, sender.as_str(), None);
        self.reply(sender, session, result, out);
        // Push the change to every session of the user (XEP-0191 §3.3).
        let sessions: Vec<(FullJid, Session)> = self
            .state
            .users
            .get(&user)
            .map(|u| {
                u.sessions
                    .iter()
                    .filter_map(|(r, s)| user.with_resource_str(r).ok().map(|f| (f, s.clone())))
                    .collect()
            })
            .unwrap_or_default();
        for (full, s) in &sessions {
            let mut push_payload = Element::new(payload.name(), NS_BLOCKING);
            for jid in &items {
                push_payload
                    .push_child(Element::new("item", NS_BLOCKING).with_attr("jid", jid.as_str()));
            }
            let id = format!("push-{}", out.next_id().simple());
            let push = Element::new("iq", ns::JABBER_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", id)
                .with_attr("to", full.as_str())
                .with_child(push_payload);
            out.deliver(full, s, push.to_xml());
        }
        // Newly blocked contacts see the user go unavailable; unblocked subscribers get
        // the current presence again.
        let available = self.available_presences(&user);
        for target in newly.iter().filter_map(|j| Jid::new(j).ok()) {
            if account_of(&target).is_none() || !self.is_local_domain(&target) {
                continue;
            }
            for (full, _) in &available {
                let el = presence_of_type("unavailable", full.as_str(), target.as_str());
                out.route(full, target.clone(), &el);
            }
        }
        for target in freed.iter().filter_map(|j| BareJid::new(j).ok()) {
            let subscribed = self
                .item(&user, &target)
                .is_some_and(|i| i.subscription.contact_sees_user());
            if !subscribed {
                continue;
            }
            self.share_presence(&user, &Jid::from(target), out);
        }
    }

    /// The available resources of `user` with their presence.
    fn available_presences(&self, user: &BareJid) -> Vec<(FullJid, Presence)> {
        self.state
            .users
            .get(user)
            .map(|u| {
                u.available()
                    .filter_map(|(r, _, p)| user.with_resource_str(r).ok().map(|f| (f, p.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends the current presence of every available resource of `user` to `target`
    /// (a new subscriber, a prober, an unblocked contact).
    fn share_presence(&self, user: &BareJid, target: &Jid, out: &mut Out<'_>) {
        for (full, presence) in self.available_presences(user) {
            let el = with_to(presence_stanza(&presence, &full), target.as_str());
            out.route(&full, target.clone(), &el);
        }
    }

    /// Whether `user` blocks `jid`.
    fn blocks(&self, user: &BareJid, jid: &Jid) -> bool {
        self.state.users.get(user).is_some_and(|u| u.blocks(jid))
    }

    /// Get or set XML stored for the sender's account (vCard, private XML storage).
    fn stored_xml_iq(
        &mut self,
        sender: &FullJid,
        session: &Session,
        element: &Element,
        key: String,
        out: &mut Out<'_>,
    ) {
        let user = sender.bare();
        let Some(payload) = element.children().next() else {
            return;
        };
        let is_private = key.starts_with(NS_PRIVATE);
        if element.attr("type") == Some("set") {
            let stored = if is_private {
                payload.children().next().cloned()
            } else {
                Some(payload.clone())
            };
            let Some(stored) = stored else {
                return;
            };
            let xml = stored.to_xml();
            self.state
                .user_mut(&user)
                .data
                .insert(key.clone(), xml.clone());
            out.outputs.push(Output::UserData(UserDataChanged {
                user,
                namespace: key,
                xml: Some(xml),
                at: out.now,
            }));
            let result = iq_result(element, sender.as_str(), None);
            return self.reply(sender, session, result, out);
        }
        let stored = self
            .state
            .users
            .get(&user)
            .and_then(|u| u.data.get(&key))
            .and_then(|xml| parse_fragment(xml));
        let body = match (is_private, stored) {
            (false, Some(vcard)) => vcard,
            (false, None) => Element::new("vCard", NS_VCARD),
            (true, found) => {
                let mut query = Element::new("query", NS_PRIVATE);
                match found {
                    Some(data) => query.push_child(data),
                    None => {
                        if let Some(asked) = payload.children().next() {
                            query.push_child(Element::new(asked.name(), asked.namespace()));
                        }
                    }
                }
                query
            }
        };
        let result = iq_result(element, sender.as_str(), None).with_child(body);
        self.reply(sender, session, result, out);
    }

    fn server_features(&self) -> Vec<&'static str> {
        let mut features = vec![
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            NS_PING,
            NS_ROSTER,
            NS_VCARD,
            NS_PRIVATE,
            NS_OFFLINE,
            NS_CARBONS,
            NS_BLOCKING,
            NS_ADDRESS,
            "urn:xmpp:sm:3",
        ];
        if self.config.version_enabled {
            features.push(NS_VERSION);
        }
        if self.config.mam_enabled {
            features.extend([NS_MAM, NS_MAM_EXTENDED]);
        }
        features.sort_unstable();
        features
    }

    fn roster_iq(
        &mut self,
        sender: &FullJid,
        session: &Session,
        element: &Element,
        out: &mut Out<'_>,
    ) {
        let user = sender.bare();
        let kind = element.attr("type").unwrap_or("");
        if kind == "get" {
            let mut query = Element::new("query", NS_ROSTER);
            if let Some(u) = self.state.users.get(&user) {
                for (contact, item) in &u.roster {
                    if item.on_roster() {
                        query.push_child(item_element(contact, item));
                    }
                }
            }
            let result = iq_result(element, sender.as_str(), None).with_child(query);
            self.reply(sender, session, result, out);
            let resource = sender.resource().as_str();
            if let Some(s) = self
                .state
                .users
                .get_mut(&user)
                .and_then(|u| u.sessions.get_mut(resource))
                && !s.roster_requested
            {
                s.roster_requested = true;
                let s = s.clone();
                self.record_session(sender, &s, out);
            }
            return;
        }
        // Roster set: exactly one item (RFC 6121 §2.3.3).
        let items: Vec<&Element> = element
            .children()
            .next()
            .map(|q| q.children().filter(|c| c.is("item", NS_ROSTER)).collect())
            .unwrap_or_default();
        let bad = |text: &str| {
            error(StanzaErrorCondition::BadRequest)
                .with_type(StanzaErrorType::Modify)
                .with_text(text)
        };
        let [item_el] = items.as_slice() else {
            return self.reply_error(
                sender,
                session,
                element,
                bad("a roster set carries exactly one item"),
                out,
            );
        };
        let Some(contact) = item_el.attr("jid").and_then(|j| BareJid::new(j).ok()) else {
            return self.reply_error(
                sender,
                session,
                element,
                bad("the item needs a valid bare JID"),
                out,
            );
        };
        if item_el.attr("subscription") == Some("remove") {
            if let Some(mut item) = self.item(&user, &contact).filter(Item::on_roster) {
                let contact_jid = Jid::from(contact.clone());
                if item.subscription.contact_sees_user() || item.pending_in.is_some() {
                    let el = presence_of_type("unsubscribed", user.as_str(), contact.as_str());
                    out.route(sender, contact_jid.clone(), &el);
                }
                if item.subscription.user_sees_contact() || item.ask_out {
                    let el = presence_of_type("unsubscribe", user.as_str(), contact.as_str());
                    out.route(sender, contact_jid, &el);
                }
                item = Item::empty();
                item.subscription = Subscription::Remove;
                self.emit_roster(&user, &contact, &item, true, out);
            } else {
                let e = error(StanzaErrorCondition::ItemNotFound);
                return self.reply_error(sender, session, element, e, out);
            }
        } else {
            let mut groups: Vec<String> = Vec::new();
            for g in item_el.children().filter(|c| c.is("group", NS_ROSTER)) {
                let name = g.text();
                if name.is_empty() {
                    let e =
                        error(StanzaErrorCondition::NotAcceptable).with_text("empty group name");
                    return self.reply_error(sender, session, element, e, out);
                }
                if groups.contains(&name) {
                    return self.reply_error(sender, session, element, bad("duplicate group"), out);
                }
                groups.push(name);
            }
            let mut item = self.item(&user, &contact).unwrap_or_else(Item::empty);
            if item.subscription == Subscription::Remove {
                item.subscription = Subscription::None;
            }
            item.name = item_el
                .attr("name")
                .filter(|n| !n.is_empty())
                .map(str::to_owned);
            item.groups = groups;
            self.emit_roster(&user, &contact, &item, true, out);
        }
        let result = iq_result(element, sender.as_str(), None);
        self.reply(sender, session, result, out);
    }

    // ----- inbound -----

    fn inbound(&mut self, stanza: StanzaReceived, now: Timestamp) -> Vec<Output> {
        // A kept element is known to serialize as the record's XML.
        let kept = self.forwarded.take(&stanza.event_id, &stanza.xml);
        let serialized = kept.is_some().then(|| stanza.xml.clone());
        let Some(element) = kept.or_else(|| parse_stanza(&stanza.xml)) else {
            tracing::warn!(event = %stanza.event_id, "unparsable routed stanza; skipped");
            return Vec::new();
        };
        let Some(to) = stanza.recipient.clone() else {
            return Vec::new();
        };
        let source = StanzaReceivedRef::of(&stanza, "inbound");
        let mut out = Out {
            source: &source,
            outputs: Vec::new(),
            n: 0,
            now,
        };
        let recipient = to.bare();
        if !self.state.is_account(&recipient) {
            // RFC 6121 §8.5.1: no such account.
            if matches!(stanza.kind, StanzaKind::Message | StanzaKind::Iq) {
                let e = error(StanzaErrorCondition::ServiceUnavailable);
                self.bounce(&stanza, &element, e, &mut out);
            } else if stanza.stanza_type.as_deref() == Some("subscribe") {
                let el = presence_of_type(
                    "unsubscribed",
                    recipient.as_str(),
                    stanza.sender.bare().as_str(),
                );
                out.route(&stanza.sender, Jid::from(stanza.sender.bare()), &el);
            }
            return out.outputs;
        }
        let from = element
            .attr("from")
            .and_then(|f| Jid::new(f).ok())
            .unwrap_or_else(|| Jid::from(stanza.sender.clone()));
        if self.blocks(&recipient, &from) {
            // XEP-0191 §3.6: nothing from a blocked address reaches the user; requests
            // are answered as if the user did not exist.
            let request = matches!(stanza.stanza_type.as_deref(), Some("get" | "set"));
            if stanza.kind == StanzaKind::Message || (stanza.kind == StanzaKind::Iq && request) {
                let e = error(StanzaErrorCondition::ServiceUnavailable);
                self.bounce(&stanza, &element, e, &mut out);
            }
            return out.outputs;
        }
        match stanza.kind {
            StanzaKind::Message => {
                self.inbound_message(&stanza, &to, element, serialized, &mut out)
            }
            StanzaKind::Presence => self.inbound_presence(&stanza, &to, element, &mut out),
            StanzaKind::Iq => self.inbound_iq(&stanza, &to, element, &mut out),
        }
        out.outputs
    }

    /// Sends an error reply back to the sender's partition.
    fn bounce(
        &self,
        stanza: &StanzaReceived,
        element: &Element,
        e: StanzaError,
        out: &mut Out<'_>,
    ) {
        if let Some(mut reply) = error_reply(element, &e) {
            if element.name() == "message" {
                // The original content, so the sender can tell which message failed
                // (RFC 6120 §8.3.1 allows it).
                let original: Vec<_> = element.nodes().to_vec();
                reply.nodes_mut().splice(0..0, original);
            }
            out.route(&stanza.sender, Jid::from(stanza.sender.clone()), &reply);
        }
    }

    /// `serialized`: `element` serialized, when already known.
    fn inbound_message(
        &mut self,
        stanza: &StanzaReceived,
        to: &Jid,
        element: Element,
        serialized: Option<String>,
        out: &mut Out<'_>,
    ) {
        let recipient = to.bare();
        let kind = element.attr("type").unwrap_or("normal").to_owned();
        // Serialized once for the delivery, the archive entry and the compliance record.
        let xml = serialized.unwrap_or_else(|| element.to_xml());
        if let Ok(full) = to.try_as_full()
            && let Some(session) = self.state.session(full).cloned()
        {
            out.deliver_message(stanza.event_id, full, &session, xml.clone(), None);
            self.carbon_copies(full, "received", &element, std::slice::from_ref(full), out);
            return archive(stanza, &recipient, &element, &xml, out);
        }
        if kind == "error" {
            return;
        }
        if kind == "groupchat" {
            let e = error(StanzaErrorCondition::ServiceUnavailable);
            return self.bounce(stanza, &element, e, out);
        }
        // Lock-on-reply: a conversation the user answered from one resource goes there.
        if matches!(kind.as_str(), "chat" | "normal")
            && let Some(resource) =
                self.locked_resource(&recipient, &stanza.sender.bare(), stanza.received_at)
            && let Ok(full) = recipient.with_resource_str(&resource)
            && let Some(session) = self.state.session(&full).cloned()
        {
            out.deliver_message(stanza.event_id, &full, &session, xml.clone(), None);
            self.carbon_copies(
                &full,
                "received",
                &element,
                std::slice::from_ref(&full),
                out,
            );
            return archive(stanza, &recipient, &element, &xml, out);
        }
        let targets = self.message_targets(&recipient);
        if targets.is_empty() {
            if kind != "headline" && self.store_offline(stanza, &recipient, &element, &xml, out) {
                archive(stanza, &recipient, &element, &xml, out);
            }
            return;
        }
        for (full, session) in &targets {
            out.deliver_message(stanza.event_id, full, session, xml.clone(), None);
        }
        let reached: Vec<FullJid> = targets.into_iter().map(|(f, _)| f).collect();
        if let Some(first) = reached.first().cloned() {
            self.carbon_copies(&first, "received", &element, &reached, out);
        }
        archive(stanza, &recipient, &element, &xml, out);
    }

    /// The sessions a message to the bare JID `user` goes to when no lock applies: RFC
    /// 6121 §8.5.2.1, the available resources with non-negative priority. With presence
    /// switched off no resource is ever available, so every bound session is one.
    fn message_targets(&self, user: &BareJid) -> Vec<(FullJid, Session)> {
        let Some(u) = self.state.users.get(user) else {
            return Vec::new();
        };
        let full = |r: &String, s: &Session| user.with_resource_str(r).ok().map(|f| (f, s.clone()));
        if self.config.presence_enabled {
            u.available()
                .filter(|(_, _, p)| p.priority >= 0)
                .filter_map(|(r, s, _)| full(r, s))
                .collect()
        } else {
            u.sessions.iter().filter_map(|(r, s)| full(r, s)).collect()
        }
    }

    /// XEP-0160: keeps a message for an account with no available resource.
    /// Returns whether the message is now stored (newly or already).
    fn store_offline(
        &mut self,
        stanza: &StanzaReceived,
        recipient: &BareJid,
        element: &Element,
        xml: &str,
        out: &mut Out<'_>,
    ) -> bool {
        if !self.config.offline_enabled {
            let e = error(StanzaErrorCondition::ServiceUnavailable)
                .with_text("the recipient is offline and offline messages are disabled");
            self.bounce(stanza, element, e, out);
            return false;
        }
        let user = self.state.user_mut(recipient);
        if user
            .offline
            .iter()
            .any(|m| m.message_event_id == stanza.event_id)
        {
            return true; // already stored (the stanza is processed again after a restart)
        }
        if user.offline.len() >= self.config.offline_quota {
            let e = error(StanzaErrorCondition::ResourceConstraint)
                .with_type(StanzaErrorType::Wait)
                .with_text("the recipient is offline and their offline storage is full");
            self.bounce(stanza, element, e, out);
            return false;
        }
        let stored = OfflineStored {
            message_event_id: stanza.event_id,
            recipient: recipient.clone(),
            sender: Jid::from(stanza.sender.clone()),
            stored_at: stanza.received_at,
            xml: xml.to_owned(),
        };
        user.offline.push(stored.clone());
        out.outputs
            .push(Output::Offline(OfflineEvent::Stored(stored)));
        true
    }

    /// XEP-0160: hands the stored messages, oldest first and stamped with XEP-0203
    /// delayed delivery, to a session that became available with priority ≥ 0 (with
    /// presence switched off: that bound).
    fn flush_offline(&mut self, jid: &FullJid, session: &Session, out: &mut Out<'_>) {
        let bare = jid.bare();
        let stored = match self.state.users.get_mut(&bare) {
            Some(user) if !user.offline.is_empty() => std::mem::take(&mut user.offline),
            _ => return,
        };
        for message in stored {
            let Some(mut element) = parse_stanza(&message.xml) else {
                continue;
            };
            element.push_child(
                Element::new("delay", NS_DELAY)
                    .with_attr("from", self.config.domain.as_str())
                    .with_attr("stamp", message.stored_at.to_rfc3339())
                    .with_text("Offline storage"),
            );
            out.deliver_message(
                message.message_event_id,
                jid,
                session,
                element.to_xml(),
                Some(message.stored_at),
            );
            out.outputs
                .push(Output::Offline(OfflineEvent::Delivered(OfflineDelivered {
                    message_event_id: message.message_event_id,
                    recipient: bare.clone(),
                    at: out.now,
                })));
        }
    }

    fn deliver_to_available(&mut self, user: &BareJid, element: &Element, out: &mut Out<'_>) {
        let targets: Vec<(FullJid, Session)> = self
            .state
            .users
            .get(user)
            .map(|u| {
                u.available()
                    .filter_map(|(r, s, _)| user.with_resource_str(r).ok().map(|f| (f, s.clone())))
                    .collect()
            })
            .unwrap_or_default();
        for (full, session) in targets {
            out.deliver(&full, &session, element.to_xml());
        }
    }

    fn inbound_presence(
        &mut self,
        stanza: &StanzaReceived,
        to: &Jid,
        element: Element,
        out: &mut Out<'_>,
    ) {
        let recipient = to.bare();
        let kind = element.attr("type").unwrap_or("available").to_owned();
        let from = element
            .attr("from")
            .and_then(|f| Jid::new(f).ok())
            .unwrap_or_else(|| Jid::from(stanza.sender.clone()));
        let contact = from.bare();
        match kind.as_str() {
            "available" | "unavailable" | "error" => {
                if let Ok(full) = to.try_as_full() {
                    if let Some(session) = self.state.session(full).cloned() {
                        out.deliver(full, &session, element.to_xml());
                    }
                } else {
                    self.deliver_to_available(&recipient, &element, out);
                }
            }
            "probe" => {
                let allowed = self
                    .item(&recipient, &contact)
                    .is_some_and(|i| i.subscription.contact_sees_user());
                if !allowed {
                    return;
                }
                self.share_presence(&recipient, &from, out);
            }
            "subscribe" => self.inbound_subscribe(stanza, &recipient, &contact, element, out),
            "subscribed" => {
                let Some(mut item) = self.item(&recipient, &contact) else {
                    return;
                };
                if !item.ask_out || item.subscription.user_sees_contact() {
                    return;
                }
                item.add_subscription();
                item.ask_out = false;
                self.emit_roster(&recipient, &contact, &item, true, out);
                self.deliver_to_available(&recipient, &element, out);
            }
            "unsubscribe" => {
                let Some(mut item) = self.item(&recipient, &contact) else {
                    return;
                };
                let before = item.clone();
                item.drop_subscriber();
                item.pending_in = None;
                item.approved = false;
                if before != item {
                    self.emit_roster(&recipient, &contact, &item, item.on_roster(), out);
                    self.deliver_to_available(&recipient, &element, out);
                }
            }
            "unsubscribed" => {
                let Some(mut item) = self.item(&recipient, &contact) else {
                    return;
                };
                let before = item.clone();
                item.drop_subscription();
                item.ask_out = false;
                if before != item {
                    self.emit_roster(&recipient, &contact, &item, item.on_roster(), out);
                    self.deliver_to_available(&recipient, &element, out);
                }
            }
            _ => {}
        }
    }

    fn inbound_subscribe(
        &mut self,
        stanza: &StanzaReceived,
        recipient: &BareJid,
        contact: &BareJid,
        element: Element,
        out: &mut Out<'_>,
    ) {
        let existing = self.item(recipient, contact);
        let mut item = existing.clone().unwrap_or_else(|| {
            let mut i = Item::empty();
            i.subscription = Subscription::Remove;
            i
        });
        let contact_jid = Jid::from(contact.clone());
        if item.subscription.contact_sees_user() {
            // Already subscribed: answer on the user's behalf (RFC 6121 §3.1.3).
            let el = presence_of_type("subscribed", recipient.as_str(), contact.as_str());
            out.route(&stanza.sender, contact_jid, &el);
            return;
        }
        if item.approved {
            item.add_subscriber();
            item.approved = false;
            item.pending_in = None;
            self.emit_roster(recipient, contact, &item, true, out);
            let el = presence_of_type("subscribed", recipient.as_str(), contact.as_str());
            out.route(&stanza.sender, contact_jid.clone(), &el);
            self.share_presence(recipient, &contact_jid, out);
            return;
        }
        let mut request = element;
        request.set_attr("from", contact.as_str());
        request.set_attr("to", recipient.as_str());
        item.pending_in = Some(request.to_xml());
        if existing.as_ref() != Some(&item) {
            self.emit_roster(recipient, contact, &item, false, out);
        }
        self.deliver_to_available(recipient, &request, out);
    }

    fn inbound_iq(
        &mut self,
        stanza: &StanzaReceived,
        to: &Jid,
        element: Element,
        out: &mut Out<'_>,
    ) {
        let kind = element.attr("type").unwrap_or("").to_owned();
        let request = kind == "get" || kind == "set";
        if let Ok(full) = to.try_as_full() {
            if let Some(session) = self.state.session(full).cloned() {
                out.deliver(full, &session, element.to_xml());
            } else if request {
                let e = error(StanzaErrorCondition::ServiceUnavailable);
                self.bounce(stanza, &element, e, out);
            }
            return;
        }
        if !request {
            return;
        }
        // An IQ to another user's bare JID, answered by the server on the account's behalf.
        let payload = element.children().next();
        let (name, namespace) = payload
            .map(|p| (p.name(), p.namespace()))
            .unwrap_or(("", ""));
        let from = to.as_str().to_owned();
        let mut reply = match (kind.as_str(), name, namespace) {
            ("get", "query", NS_DISCO_INFO) if payload.and_then(|p| p.attr("node")).is_none() => {
                let query = Element::new("query", NS_DISCO_INFO)
                    .with_child(
                        Element::new("identity", NS_DISCO_INFO)
                            .with_attr("category", "account")
                            .with_attr("type", "registered"),
                    )
                    .with_child(
                        Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_INFO),
                    );
                iq_result(&element, stanza.sender.as_str(), Some(&from)).with_child(query)
            }
            ("get", "query", NS_DISCO_ITEMS) => {
                iq_result(&element, stanza.sender.as_str(), Some(&from))
                    .with_child(Element::new("query", NS_DISCO_ITEMS))
            }
            ("get", "ping", NS_PING) => iq_result(&element, stanza.sender.as_str(), Some(&from)),
            ("get", "vCard", NS_VCARD) => {
                let vcard = self
                    .state
                    .users
                    .get(&to.bare())
                    .and_then(|u| u.data.get(NS_VCARD))
                    .and_then(|xml| parse_fragment(xml))
                    .unwrap_or_else(|| Element::new("vCard", NS_VCARD));
                iq_result(&element, stanza.sender.as_str(), Some(&from)).with_child(vcard)
            }
            _ => {
                let e = error(StanzaErrorCondition::ServiceUnavailable);
                return self.bounce(stanza, &element, e, out);
            }
        };
        reply.set_attr("to", stanza.sender.as_str());
        out.route(&stanza.sender, Jid::from(stanza.sender.clone()), &reply);
    }
}

//! The multi-user chat decisions: `(rooms, input, now) → outputs`, no IO.

use std::collections::{BTreeMap, BTreeSet};

use imbus_core::{
    ArchivedMessage, BareJid, ComplianceRecord, Delivery, DeliveryCopy, Direction, FullJid,
    GatewayId, Jid, MessageType, Origin, SessionClosed, SessionId, StanzaKind, StanzaReceived,
    Timestamp, ToBare, Uuid,
};
use imbus_xmpp_stream::{
    Element, Node, StanzaError, StanzaErrorCondition as Cond, StanzaErrorType, error_reply,
    parse_stanza,
};

use crate::config::RoomsConfig;
use crate::state::{
    Affiliation, HistoryMessage, Occupant, Role, Room, RoomConfig, RoomEvent, Subject, Whois,
};
use crate::xml::*;

/// The text of the error SIP users get from the rooms service.
pub const SIP_REFUSED: &str = "SIP clients cannot join chat rooms";

/// What the rooms processor consumes.
#[derive(Debug, Clone)]
pub enum Input {
    /// A stanza addressed to a room (`room@service`), an occupant (`room@service/nick`)
    /// or the service itself (`service`), as its gateway published it.
    Stanza(StanzaReceived),
    /// A client session ended: its occupants leave every room they were in.
    SessionClosed(SessionClosed),
}

/// What the rooms processor produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write to an occupant's (or the sender's) session: topic `deliver.<gateway>`, key
    /// the recipient's full JID.
    Deliver(Delivery),
    /// A stanza for a user who is not (necessarily) in the room — mediated invitations
    /// and declines — for the router to deliver like any message to that user: topic
    /// `routed`, key [`StanzaReceived::owner`]. `sender` is the user who caused it (the
    /// inviter or decliner); the stanza's `from` is the room.
    Route(StanzaReceived),
    /// A room's new state: topic `rooms` (compacted), key [`RoomEvent::room`];
    /// [`RoomEvent::Destroyed`] is written as a tombstone.
    Room(RoomEvent),
    /// A message with a body delivered to one recipient of the room (one record per
    /// bare JID, not per resource): topic `compliance`, key the recipient's bare JID.
    Compliance(ComplianceRecord),
    /// A group chat message of an archived room (persistent, with "archive all room
    /// messages" on): owner the room, `with` the sender's real full JID (for the
    /// archive's records; results show only the message, from `room@service/nick`):
    /// topic `rooms.archive`, key the room's bare JID.
    Archive(ArchivedMessage),
    /// An archive query (XEP-0313) to a room, from a user allowed to read its archive:
    /// topic `rooms.archive`, key the room's bare JID, after the room's messages, for the
    /// room-archive connector to answer.
    ArchiveQuery(StanzaReceived),
}

/// The archive id of a room message: the XEP-0313 result id and the `<stanza-id/>` the
/// room stamps on it.
pub fn room_archive_id(message_event_id: &Uuid, room: &BareJid) -> Uuid {
    ArchivedMessage::derive_id(message_event_id, room, room)
}

/// Whether a room's messages go to its archive.
fn archived(config: &RoomsConfig, room: &Room) -> bool {
    config.archive_all && room.config.persistent
}

/// The id of the delivery of the message `message_event_id` to the session `to` (the
/// same derivation as the router's, so a message reprocessed after a crash is delivered
/// under the same id).
pub fn message_delivery_id(message_event_id: &Uuid, to: &FullJid) -> Uuid {
    let mut name = Vec::with_capacity(8 + to.as_str().len());
    name.extend_from_slice(b"deliver\0");
    name.extend_from_slice(to.as_str().as_bytes());
    Uuid::new_v5(message_event_id, &name)
}

/// The namespace of the ids derived from session ends (which carry no event id).
const SESSION_CLOSED_NAMESPACE: Uuid = Uuid::from_u128(0x6d75_632d_636c_6f73_6564_0000_0000_0001);

/// The multi-user chat service: its settings and the rooms of its partitions.
#[derive(Debug)]
pub struct Rooms {
    config: RoomsConfig,
    rooms: BTreeMap<BareJid, Room>,
    /// Rooms of partitions this instance does not own, as last seen on the changelog
    /// (without their history), for the room directory and room search only.
    elsewhere: BTreeMap<BareJid, Room>,
}

/// Collects the outputs of one input and numbers them for their derived ids.
struct Out {
    source: Uuid,
    n: u32,
    outputs: Vec<Output>,
    /// The room being handled was destroyed.
    destroyed: bool,
}

impl Out {
    fn new(source: Uuid) -> Self {
        Self {
            source,
            n: 0,
            outputs: Vec::new(),
            destroyed: false,
        }
    }

    fn next_id(&mut self, to: &str) -> Uuid {
        self.n += 1;
        let mut name = Vec::with_capacity(16 + to.len());
        name.extend_from_slice(b"rooms\0");
        name.extend_from_slice(&self.n.to_be_bytes());
        name.push(0);
        name.extend_from_slice(to.as_bytes());
        Uuid::new_v5(&self.source, &name)
    }

    fn deliver_to(
        &mut self,
        to: &FullJid,
        gateway_id: &GatewayId,
        session_id: &SessionId,
        element: &Element,
        delayed_from: Option<Timestamp>,
    ) {
        let event_id = self.next_id(to.as_str());
        self.outputs.push(Output::Deliver(Delivery {
            event_id,
            source_event_id: self.source,
            to: to.clone(),
            gateway_id: gateway_id.clone(),
            session_id: session_id.clone(),
            xml: element.to_xml(),
            delayed_from,
            copies: Vec::new(),
        }));
    }

    /// Delivers `element` (addressed to the first of `occupants`) to several occupants
    /// on one gateway: one delivery, with the others as its copies.
    fn deliver_to_all(&mut self, occupants: &[&Occupant], element: &Element) {
        self.deliver_group(occupants, element, false);
    }

    /// One delivery of `element` to `occupants` (addressed to the first, the others as
    /// copies). A message's own content (`message`) is delivered under the ids that
    /// depend only on the message and each recipient; anything else under numbered ids.
    fn deliver_group(&mut self, occupants: &[&Occupant], element: &Element, message: bool) {
        let Some((first, others)) = occupants.split_first() else {
            return;
        };
        let id = |out: &mut Self, to: &FullJid| {
            if message {
                out.n += 1;
                message_delivery_id(&out.source, to)
            } else {
                out.next_id(to.as_str())
            }
        };
        let event_id = id(self, &first.jid);
        let copies = others
            .iter()
            .map(|o| DeliveryCopy {
                event_id: id(self, &o.jid),
                to: o.jid.clone(),
                session_id: o.session_id.clone(),
            })
            .collect();
        self.outputs.push(Output::Deliver(Delivery {
            event_id,
            source_event_id: self.source,
            to: first.jid.clone(),
            gateway_id: first.gateway_id.clone(),
            session_id: first.session_id.clone(),
            xml: element.to_xml(),
            delayed_from: None,
            copies,
        }));
    }

    fn deliver(&mut self, occupant: &Occupant, element: &Element) {
        self.deliver_to(
            &occupant.jid,
            &occupant.gateway_id,
            &occupant.session_id,
            element,
            None,
        );
    }

    /// Delivers a message's own content to several occupants on one gateway, `element`
    /// addressed to the first: one delivery, with the others as its copies, each under
    /// the id that depends only on the message and the recipient.
    fn deliver_message_to_all(&mut self, occupants: &[&Occupant], element: &Element) {
        self.deliver_group(occupants, element, true);
    }

    /// Delivers a message's own content (group chat or private message), under the id
    /// that depends only on the message and the recipient.
    fn deliver_message(&mut self, occupant: &Occupant, element: &Element) {
        self.n += 1;
        self.outputs.push(Output::Deliver(Delivery {
            event_id: message_delivery_id(&self.source, &occupant.jid),
            source_event_id: self.source,
            to: occupant.jid.clone(),
            gateway_id: occupant.gateway_id.clone(),
            session_id: occupant.session_id.clone(),
            xml: element.to_xml(),
            delayed_from: None,
            copies: Vec::new(),
        }));
    }

    /// Answers the sender of `stanza`.
    fn reply(&mut self, stanza: &StanzaReceived, element: &Element) {
        self.deliver_to(
            &stanza.sender,
            &stanza.gateway_id,
            &stanza.session_id,
            element,
            None,
        );
    }

    /// Answers the sender of `stanza` with a stanza error.
    fn refuse(
        &mut self,
        stanza: &StanzaReceived,
        original: &Element,
        condition: Cond,
        error_type: StanzaErrorType,
        text: &str,
    ) {
        let error = StanzaError::new(condition)
            .with_type(error_type)
            .with_text(text);
        if let Some(mut reply) = error_reply(original, &error) {
            reply.set_attr("to", stanza.sender.as_str());
            self.reply(stanza, &reply);
        }
    }

    /// Sends a stanza to a user through the router.
    fn route(&mut self, stanza: &StanzaReceived, to: Jid, element: &Element) {
        let event_id = self.next_id(to.as_str());
        self.outputs.push(Output::Route(StanzaReceived {
            event_id,
            gateway_id: stanza.gateway_id.clone(),
            session_id: stanza.session_id.clone(),
            received_at: stanza.received_at,
            sender: stanza.sender.clone(),
            recipient: Some(to),
            kind: StanzaKind::Message,
            stanza_type: element.attr("type").map(str::to_owned),
            stanza_id: element.attr("id").map(str::to_owned),
            xml: element.to_xml(),
        }));
    }
}

/// Whether `room` is a room of the service domain `service` (the domain is part of a
/// room's identity).
fn at(room: &Room, service: &str) -> bool {
    room.jid.domain().as_str() == service
}

/// The address of a room through the service domain `service`.
fn room_address(room: &Room, service: &str) -> String {
    format!("{}@{service}", room.node())
}

/// The address of the occupant `nick` as heard by `viewer`.
fn occupant_address(room: &Room, viewer: &Occupant, nick: &str) -> String {
    format!("{}/{nick}", room_address(room, &viewer.service))
}

/// Whether `viewer` may see the real JIDs of the occupants.
fn sees_jids(room: &Room, viewer: &Occupant) -> bool {
    room.config.whois == Whois::Anyone || viewer.role == Role::Moderator
}

/// What a presence broadcast about one occupant says besides its role and affiliation.
#[derive(Default)]
struct Notice<'a> {
    /// Status codes for everyone.
    codes: &'a [u16],
    /// Status codes for the occupant itself (110 is always added).
    self_codes: &'a [u16],
    /// The occupant's new nickname (status 303).
    new_nick: Option<&'a str>,
    /// Why (kicks, bans).
    reason: Option<&'a str>,
    /// Who did it (kicks, bans): the actor's nickname.
    actor: Option<&'a str>,
}

/// The presence of occupant `nick` for `viewer`.
fn presence_for(
    room: &Room,
    nick: &str,
    occupant: &Occupant,
    role: Role,
    viewer: &Occupant,
    notice: &Notice<'_>,
) -> Element {
    let mut presence = Element::new("presence", NS_CLIENT)
        .with_attr("from", occupant_address(room, viewer, nick))
        .with_attr("to", viewer.jid.as_str());
    if role == Role::None {
        presence.set_attr("type", "unavailable");
    } else {
        for child in parse_children(&occupant.presence) {
            presence.push_child(child);
        }
    }
    let is_self = viewer.jid == occupant.jid;
    let mut item = Element::new("item", NS_MUC_USER)
        .with_attr(
            "affiliation",
            room.affiliation(&occupant.jid.bare()).as_str(),
        )
        .with_attr("role", role.as_str());
    if is_self || sees_jids(room, viewer) {
        item.set_attr("jid", occupant.jid.as_str());
    }
    if let Some(new_nick) = notice.new_nick {
        item.set_attr("nick", new_nick);
    }
    if let Some(actor) = notice.actor {
        item.push_child(Element::new("actor", NS_MUC_USER).with_attr("nick", actor));
    }
    if let Some(reason) = notice.reason {
        item.push_child(text_el("reason", NS_MUC_USER, reason));
    }
    let mut x = Element::new("x", NS_MUC_USER).with_child(item);
    let mut codes: Vec<u16> = notice.codes.to_vec();
    if is_self {
        codes.push(110);
        codes.extend_from_slice(notice.self_codes);
    }
    codes.sort_unstable();
    codes.dedup();
    for code in codes {
        x.push_child(Element::new("status", NS_MUC_USER).with_attr("code", code.to_string()));
    }
    presence.push_child(x);
    presence
}

/// The viewers of occupant `occupant`'s presence, in groups that see the same stanza but
/// for its `to`: the same gateway and service, the occupant itself or not, real JIDs
/// shown or not.
fn presence_audiences<'r>(
    room: &'r Room,
    occupant: &Occupant,
    include_self: bool,
) -> Vec<Vec<&'r Occupant>> {
    let mut groups: Vec<Vec<&Occupant>> = Vec::new();
    for viewer in room.occupants.values() {
        let is_self = viewer.jid == occupant.jid;
        if is_self && !include_self {
            continue;
        }
        let alike = |other: &Occupant| {
            other.gateway_id == viewer.gateway_id
                && other.service == viewer.service
                && (other.jid == occupant.jid) == is_self
                && sees_jids(room, other) == sees_jids(room, viewer)
        };
        match groups.iter_mut().find(|group| alike(group[0])) {
            Some(group) => group.push(viewer),
            None => groups.push(vec![viewer]),
        }
    }
    groups
}

/// Sends the presence of occupant `nick` (with `role`) to every occupant: one delivery
/// per group of viewers who see the same stanza.
fn broadcast_presence(room: &Room, nick: &str, role: Role, notice: &Notice<'_>, out: &mut Out) {
    let Some(occupant) = room.occupants.get(nick) else {
        return;
    };
    for group in presence_audiences(room, occupant, true) {
        let presence = presence_for(room, nick, occupant, role, group[0], notice);
        out.deliver_to_all(&group, &presence);
    }
}

/// Removes occupant `nick`, telling everyone (the occupant too when `tell_self`).
fn remove_occupant(
    room: &mut Room,
    nick: &str,
    notice: &Notice<'_>,
    tell_self: bool,
    out: &mut Out,
) {
    let Some(occupant) = room.occupants.get(nick) else {
        return;
    };
    for group in presence_audiences(room, occupant, tell_self) {
        let presence = presence_for(room, nick, occupant, Role::None, group[0], notice);
        out.deliver_to_all(&group, &presence);
    }
    room.occupants.remove(nick);
}

/// The compliance record of a room message for one recipient.
fn compliance(
    stanza: &StanzaReceived,
    room: &Room,
    nick: &str,
    message: &Element,
    recipient: BareJid,
    message_type: MessageType,
) -> ComplianceRecord {
    let text = |name: &str| message.child(name, NS_CLIENT).map(Element::text);
    ComplianceRecord {
        event_id: stanza.event_id,
        recipient,
        sender: Jid::from(stanza.sender.clone()),
        direction: Direction::Inbound,
        timestamp: stanza.received_at,
        message_type,
        thread: text("thread"),
        subject: text("subject"),
        body: text("body"),
        room: Some(room.jid.clone()),
        nickname: Some(nick.to_owned()),
        xml: message.to_xml(),
        origin: Origin::Local,
    }
}

/// A boolean data form value.
fn form_bool(values: &[String]) -> Option<bool> {
    match values.first().map(|v| v.trim()) {
        Some("1" | "true") => Some(true),
        Some("0" | "false") | None | Some("") => Some(false),
        _ => None,
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// One change requested through `muc#admin`.
enum Change {
    Role {
        nick: String,
        role: Role,
        reason: Option<String>,
    },
    Affiliation {
        user: BareJid,
        affiliation: Affiliation,
        reason: Option<String>,
    },
}

impl Rooms {
    /// A service with no rooms.
    pub fn new(config: RoomsConfig) -> Self {
        Self {
            config,
            rooms: BTreeMap::new(),
            elsewhere: BTreeMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// The settings (some can change while the service runs).
    pub fn config_mut(&mut self) -> &mut RoomsConfig {
        &mut self.config
    }

    /// Every room, by its bare JID (at the canonical service).
    pub fn rooms(&self) -> &BTreeMap<BareJid, Room> {
        &self.rooms
    }

    /// One room.
    pub fn room(&self, jid: &BareJid) -> Option<&Room> {
        self.rooms.get(jid)
    }

    /// Folds a record of the `rooms` changelog (restoring after a restart).
    pub fn apply(&mut self, event: &RoomEvent) {
        match event {
            RoomEvent::Updated(room) => {
                self.elsewhere.remove(&room.jid);
                self.rooms.insert(room.jid.clone(), Room::clone(room));
            }
            RoomEvent::Destroyed { room, .. } => {
                self.elsewhere.remove(room);
                self.rooms.remove(room);
            }
        }
    }

    /// Folds a record of the `rooms` changelog of a partition this instance does not
    /// own. Such rooms only appear in the room directory and room search (which list the
    /// rooms of every partition); nothing else acts on them.
    pub fn observe(&mut self, event: &RoomEvent) {
        match event {
            RoomEvent::Updated(room) => {
                let mut listing = Room::clone(room);
                listing.history.clear();
                self.elsewhere.insert(listing.jid.clone(), listing);
            }
            RoomEvent::Destroyed { room, .. } => {
                self.elsewhere.remove(room);
            }
        }
    }

    /// Hands over the rooms for which `keep` is false (partitions revoked): they are no
    /// longer acted on, and stay in the room directory as if [observed](Self::observe).
    pub fn retain_rooms(&mut self, mut keep: impl FnMut(&BareJid) -> bool) {
        let revoked: Vec<BareJid> = self.rooms.keys().filter(|j| !keep(j)).cloned().collect();
        for jid in revoked {
            if let Some(mut room) = self.rooms.remove(&jid) {
                room.history.clear();
                self.elsewhere.insert(jid, room);
            }
        }
    }

    /// Processes one input and returns what to write, in order.
    ///
    /// Decisions depend on the state and the input only (times come from the input: the
    /// stanza's receive time, the session's end), so processing an input again from the
    /// same state repeats the outputs exactly; `_now` (the processing time) is accepted
    /// for symmetry with the other processors.
    pub fn handle(&mut self, input: Input, _now: Timestamp) -> Vec<Output> {
        match input {
            Input::Stanza(stanza) => self.stanza(stanza),
            Input::SessionClosed(closed) => self.session_closed(&closed),
        }
    }

    fn is_sip(&self, stanza: &StanzaReceived) -> bool {
        self.config.sip_gateways.contains(&stanza.gateway_id)
            || self
                .config
                .sip_domains
                .iter()
                .any(|d| d.domain() == stanza.sender.domain())
    }

    fn stanza(&mut self, stanza: StanzaReceived) -> Vec<Output> {
        let mut out = Out::new(stanza.event_id);
        let Some(element) = parse_stanza(&stanza.xml) else {
            return out.outputs;
        };
        let Some(to) = stanza.recipient.clone() else {
            return out.outputs;
        };
        let service = to.domain().as_str().to_owned();
        if !self.config.serves(&service) {
            return out.outputs;
        }
        let kind = element.attr("type").unwrap_or("");
        if self.is_sip(&stanza) {
            if kind != "error" && kind != "unavailable" && kind != "result" {
                out.refuse(
                    &stanza,
                    &element,
                    Cond::NotAllowed,
                    StanzaErrorType::Cancel,
                    SIP_REFUSED,
                );
            }
            return out.outputs;
        }
        let Some(node) = to.node() else {
            self.service_stanza(&stanza, &element, &service, &mut out);
            return out.outputs;
        };
        let Some(room_jid) = self.config.room_jid(node.as_str(), &service) else {
            return out.outputs;
        };
        let nick = to.resource().map(|r| r.as_str().to_owned());
        let before = self.rooms.remove(&room_jid);
        let mut slot = before.clone();
        let at = stanza.received_at;
        let ctx = Ctx {
            stanza: &stanza,
            element: &element,
            service: &service,
        };
        match stanza.kind {
            StanzaKind::Presence => self.presence(&ctx, &mut slot, &room_jid, nick, &mut out),
            StanzaKind::Message => self.message(&ctx, &mut slot, nick, &mut out),
            StanzaKind::Iq => self.iq(&ctx, &mut slot, nick, &mut out),
        }
        self.finish(room_jid, before, slot, at, &mut out);
        out.outputs
    }

    /// Puts the room back and records its new state, or records its end.
    fn finish(
        &mut self,
        jid: BareJid,
        before: Option<Room>,
        after: Option<Room>,
        at: Timestamp,
        out: &mut Out,
    ) {
        match after {
            Some(room)
                if !out.destroyed && (room.config.persistent || !room.occupants.is_empty()) =>
            {
                if before.as_ref() != Some(&room) {
                    out.outputs
                        .push(Output::Room(RoomEvent::Updated(Box::new(room.clone()))));
                }
                self.rooms.insert(jid, room);
            }
            _ => {
                if before.is_some() {
                    out.outputs
                        .push(Output::Room(RoomEvent::Destroyed { room: jid, at }));
                }
            }
        }
    }

    /// A session ended: its occupants leave their rooms.
    fn session_closed(&mut self, closed: &SessionClosed) -> Vec<Output> {
        let name = format!("{}\0{}", closed.gateway_id, closed.session_id);
        let mut out = Out::new(Uuid::new_v5(&SESSION_CLOSED_NAMESPACE, name.as_bytes()));
        let affected: Vec<BareJid> = self
            .rooms
            .iter()
            .filter(|(_, r)| {
                r.occupants
                    .values()
                    .any(|o| o.jid == closed.jid && o.session_id == closed.session_id)
            })
            .map(|(j, _)| j.clone())
            .collect();
        for jid in affected {
            let Some(before) = self.rooms.remove(&jid) else {
                continue;
            };
            let mut room = before.clone();
            let nicks: Vec<String> = room
                .occupants
                .iter()
                .filter(|(_, o)| o.jid == closed.jid && o.session_id == closed.session_id)
                .map(|(n, _)| n.clone())
                .collect();
            for nick in nicks {
                remove_occupant(&mut room, &nick, &Notice::default(), false, &mut out);
            }
            self.finish(jid, Some(before), Some(room), closed.at, &mut out);
        }
        out.outputs
    }
}

/// The stanza being handled.
struct Ctx<'a> {
    stanza: &'a StanzaReceived,
    element: &'a Element,
    /// The service domain the stanza was addressed to.
    service: &'a str,
}

impl Ctx<'_> {
    fn sender(&self) -> &FullJid {
        &self.stanza.sender
    }

    fn refuse(&self, out: &mut Out, condition: Cond, error_type: StanzaErrorType, text: &str) {
        out.refuse(self.stanza, self.element, condition, error_type, text);
    }

    fn no_room(&self, out: &mut Out) {
        self.refuse(
            out,
            Cond::ItemNotFound,
            StanzaErrorType::Cancel,
            "This room does not exist",
        );
    }

    fn answer(&self, out: &mut Out, payload: Option<Element>) {
        let mut result = iq_result(self.element, self.sender().as_str());
        if let Some(payload) = payload {
            result.push_child(payload);
        }
        out.reply(self.stanza, &result);
    }
}

// Presence: entering, changing, leaving.
impl Rooms {
    fn presence(
        &self,
        ctx: &Ctx<'_>,
        slot: &mut Option<Room>,
        room_jid: &BareJid,
        nick: Option<String>,
        out: &mut Out,
    ) {
        let kind = ctx.element.attr("type");
        let current = slot
            .as_ref()
            .and_then(|r| r.nick_of(ctx.sender()).map(str::to_owned));
        match kind {
            None => {}
            Some("unavailable") | Some("error") => {
                // Leaving (an error presence from an occupant means its client is gone,
                // XEP-0045 §18.1).
                if let (Some(room), Some(current)) = (slot.as_mut(), current) {
                    let tell_self = kind == Some("unavailable");
                    remove_occupant(room, &current, &Notice::default(), tell_self, out);
                }
                return;
            }
            Some(_) => return, // subscriptions and probes mean nothing to a room
        }
        let Some(nick) = nick else {
            return ctx.refuse(
                out,
                Cond::JidMalformed,
                StanzaErrorType::Modify,
                "A nickname is required to enter a room (room@service/nickname)",
            );
        };
        let payload = children_xml(ctx.element, |c| {
            c.namespace() == NS_MUC || c.namespace() == NS_MUC_USER
        });
        match (slot.as_mut(), current) {
            (Some(room), Some(current)) if current == nick => {
                // A presence update of an occupant.
                if let Some(o) = room.occupants.get_mut(&nick) {
                    o.presence = payload;
                    o.session_id = ctx.stanza.session_id.clone();
                    o.gateway_id = ctx.stanza.gateway_id.clone();
                    let role = o.role;
                    broadcast_presence(room, &nick, role, &Notice::default(), out);
                }
            }
            (Some(room), Some(current)) => change_nick(ctx, room, &current, &nick, payload, out),
            _ => self.join(ctx, slot, room_jid, &nick, payload, out),
        }
    }

    fn join(
        &self,
        ctx: &Ctx<'_>,
        slot: &mut Option<Room>,
        room_jid: &BareJid,
        nick: &str,
        payload: String,
        out: &mut Out,
    ) {
        let sender = ctx.sender();
        let user = sender.bare();
        let muc = ctx.element.child("x", NS_MUC);
        let created = slot.is_none();
        if created {
            if !self.config.may_create(sender) {
                return ctx.refuse(
                    out,
                    Cond::NotAllowed,
                    StanzaErrorType::Cancel,
                    "Creating rooms is restricted on this service",
                );
            }
            let mut room = Room::new(
                room_jid.clone(),
                self.config.default_room.clone(),
                ctx.stanza.received_at,
            );
            // A client speaking the MUC protocol configures its new room (or accepts
            // the defaults); an old groupchat client gets an instant room.
            room.locked = muc.is_some() && self.config.lock_new_rooms;
            room.set_affiliation(user.clone(), Affiliation::Owner);
            *slot = Some(room);
        }
        let Some(room) = slot.as_mut() else {
            return;
        };
        let affiliation = room.affiliation(&user);
        if room.locked && affiliation != Affiliation::Owner {
            return ctx.refuse(
                out,
                Cond::ItemNotFound,
                StanzaErrorType::Cancel,
                "This room is locked until its owner configures it",
            );
        }
        if affiliation == Affiliation::Outcast {
            return ctx.refuse(
                out,
                Cond::Forbidden,
                StanzaErrorType::Auth,
                "You are banned from this room",
            );
        }
        if room.config.members_only && affiliation < Affiliation::Member {
            return ctx.refuse(
                out,
                Cond::RegistrationRequired,
                StanzaErrorType::Auth,
                "This room is members-only",
            );
        }
        if let Some(password) = &room.config.password {
            let given = muc
                .and_then(|x| x.child("password", NS_MUC))
                .map(Element::text);
            if given.as_deref() != Some(password.as_str()) {
                return ctx.refuse(
                    out,
                    Cond::NotAuthorized,
                    StanzaErrorType::Auth,
                    "A password is required to enter this room",
                );
            }
        }
        if room.occupants.contains_key(nick) {
            return ctx.refuse(
                out,
                Cond::Conflict,
                StanzaErrorType::Cancel,
                "That nickname is already in use in this room",
            );
        }
        if let Some(max) = room.config.max_users
            && room.occupants.len() >= max
            && affiliation < Affiliation::Admin
        {
            return ctx.refuse(
                out,
                Cond::ServiceUnavailable,
                StanzaErrorType::Wait,
                "This room is full",
            );
        }
        let occupant = Occupant {
            jid: sender.clone(),
            gateway_id: ctx.stanza.gateway_id.clone(),
            session_id: ctx.stanza.session_id.clone(),
            service: ctx.service.to_owned(),
            role: room.default_role(affiliation),
            presence: payload,
            joined_at: ctx.stanza.received_at,
        };
        // The occupants already there, to the newcomer.
        for (other_nick, other) in &room.occupants {
            let presence = presence_for(
                room,
                other_nick,
                other,
                other.role,
                &occupant,
                &Notice::default(),
            );
            out.deliver(&occupant, &presence);
        }
        let role = occupant.role;
        room.occupants.insert(nick.to_owned(), occupant.clone());
        let mut self_codes = Vec::new();
        if room.config.whois == Whois::Anyone {
            self_codes.push(100);
        }
        if created {
            self_codes.push(201);
        }
        let notice = Notice {
            self_codes: &self_codes,
            ..Notice::default()
        };
        broadcast_presence(room, nick, role, &notice, out);
        if !created {
            self.send_history(ctx, room, &occupant, muc, out);
        }
        send_subject(room, &occupant, out);
    }

    /// The room's history to a newcomer (XEP-0045 §7.2.15), as the client limits it.
    fn send_history(
        &self,
        ctx: &Ctx<'_>,
        room: &Room,
        occupant: &Occupant,
        muc: Option<&Element>,
        out: &mut Out,
    ) {
        let mut count = self.config.history_length(&room.config);
        let mut not_before = None;
        let mut max_chars = None;
        if let Some(history) = muc.and_then(|x| x.child("history", NS_MUC)) {
            let number = |name: &str| history.attr(name).and_then(|v| v.trim().parse().ok());
            if let Some(n) = number("maxstanzas") {
                count = count.min(n);
            }
            max_chars = number("maxchars");
            if let Some(seconds) = number("seconds") {
                let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
                let back = seconds.saturating_mul(1_000_000);
                // Measured from the join's receive time, so reprocessing repeats it.
                not_before = Some(Timestamp::from_micros(
                    ctx.stanza.received_at.as_micros().saturating_sub(back),
                ));
            }
            if let Some(since) = history.attr("since").and_then(parse_datetime) {
                not_before = Some(not_before.map_or(since, |t: Timestamp| t.max(since)));
            }
        }
        let room_from = room_address(room, &occupant.service);
        let mut chosen: Vec<(Element, Timestamp)> = Vec::new();
        let mut chars = 0usize;
        for entry in room.history.iter().rev() {
            if chosen.len() >= count || not_before.is_some_and(|t| entry.at < t) {
                break;
            }
            let Some(mut message) = parse_stanza(&entry.xml) else {
                continue;
            };
            message.set_attr("from", format!("{room_from}/{}", entry.nick));
            message.set_attr("to", occupant.jid.as_str());
            message.push_child(
                Element::new("delay", NS_DELAY)
                    .with_attr("from", room_from.as_str())
                    .with_attr("stamp", entry.at.to_rfc3339()),
            );
            chars += message.to_xml().chars().count();
            if max_chars.is_some_and(|max| chars > max) {
                break;
            }
            chosen.push((message, entry.at));
        }
        for (message, at) in chosen.iter().rev() {
            out.deliver_to(
                &occupant.jid,
                &occupant.gateway_id,
                &occupant.session_id,
                message,
                Some(*at),
            );
        }
    }
}

/// The room's subject to an occupant (sent after the history, even when empty).
fn send_subject(room: &Room, occupant: &Occupant, out: &mut Out) {
    let room_from = room_address(room, &occupant.service);
    let (from, text) = match &room.subject {
        Some(Subject {
            text,
            nick: Some(nick),
            ..
        }) => (format!("{room_from}/{nick}"), text.as_str()),
        Some(subject) => (room_from, subject.text.as_str()),
        None => (room_from, ""),
    };
    let mut subject = Element::new("subject", NS_CLIENT);
    subject.push_text(text);
    let message = Element::new("message", NS_CLIENT)
        .with_attr("type", "groupchat")
        .with_attr("from", from)
        .with_attr("to", occupant.jid.as_str())
        .with_child(subject);
    out.deliver(occupant, &message);
}

fn change_nick(
    ctx: &Ctx<'_>,
    room: &mut Room,
    current: &str,
    nick: &str,
    payload: String,
    out: &mut Out,
) {
    if room.occupants.contains_key(nick) {
        return ctx.refuse(
            out,
            Cond::Conflict,
            StanzaErrorType::Cancel,
            "That nickname is already in use in this room",
        );
    }
    let notice = Notice {
        codes: &[303],
        new_nick: Some(nick),
        ..Notice::default()
    };
    broadcast_presence(room, current, Role::None, &notice, out);
    let Some(mut occupant) = room.occupants.remove(current) else {
        return;
    };
    occupant.presence = payload;
    let role = occupant.role;
    room.occupants.insert(nick.to_owned(), occupant);
    broadcast_presence(room, nick, role, &Notice::default(), out);
}

// Messages: group chat, private messages, subject, invitations.
impl Rooms {
    fn message(&self, ctx: &Ctx<'_>, slot: &mut Option<Room>, nick: Option<String>, out: &mut Out) {
        let kind = ctx.element.attr("type").unwrap_or("normal");
        if kind == "error" {
            return;
        }
        let invitation = ctx.element.child("x", NS_MUC_USER).filter(|x| {
            x.children()
                .any(|c| c.name() == "invite" || c.name() == "decline")
        });
        if let Some(x) = invitation
            && nick.is_none()
        {
            return self.invitation(ctx, slot, x, out);
        }
        let Some(room) = slot.as_mut() else {
            return ctx.no_room(out);
        };
        match (nick, kind) {
            (None, "groupchat") => self.groupchat(ctx, room, out),
            (None, _) => ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "Messages to the room must be of type groupchat",
            ),
            (Some(_), "groupchat") => ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "Group chat messages go to the room, not to one occupant",
            ),
            (Some(target), _) => private_message(ctx, room, &target, out),
        }
    }

    fn groupchat(&self, ctx: &Ctx<'_>, room: &mut Room, out: &mut Out) {
        let Some(nick) = room.nick_of(ctx.sender()).map(str::to_owned) else {
            return ctx.refuse(
                out,
                Cond::NotAcceptable,
                StanzaErrorType::Modify,
                "Only occupants may send messages to the room",
            );
        };
        let role = room.occupants.get(&nick).map_or(Role::None, |o| o.role);
        if role < Role::Participant {
            return ctx.refuse(
                out,
                Cond::Forbidden,
                StanzaErrorType::Auth,
                "You need voice to send messages in this moderated room",
            );
        }
        let body = ctx.element.child("body", NS_CLIENT);
        if let Some(subject) = ctx.element.child("subject", NS_CLIENT)
            && body.is_none()
        {
            let allowed = role == Role::Moderator
                || (room.config.change_subject && role >= Role::Participant);
            if !allowed {
                return ctx.refuse(
                    out,
                    Cond::Forbidden,
                    StanzaErrorType::Auth,
                    "Only moderators may change the subject of this room",
                );
            }
            room.subject = Some(Subject {
                text: subject.text(),
                nick: Some(nick.clone()),
                at: ctx.stanza.received_at,
            });
        }
        let mut message = ctx.element.clone();
        message.remove_attr("from");
        message.remove_attr("to");
        // A client cannot choose the archive id: only the room's own stanza-id stays.
        message
            .nodes_mut()
            .retain(|n| !matches!(n, Node::Element(e) if e.is("stanza-id", NS_SID)));
        let archive_id = (archived(&self.config, room) && body.is_some())
            .then(|| room_archive_id(&ctx.stanza.event_id, &room.jid));
        // The occupants of one gateway who addressed the room at the same service get
        // the same stanza but for its `to`: one delivery for all of them, which their
        // gateway copies to each (a room of 500 costs a record per gateway, not 500).
        let mut groups: Vec<Vec<&Occupant>> = Vec::new();
        for occupant in room.occupants.values() {
            let group = groups.iter_mut().find(|group| {
                group[0].gateway_id == occupant.gateway_id && group[0].service == occupant.service
            });
            match group {
                Some(group) => group.push(occupant),
                None => groups.push(vec![occupant]),
            }
        }
        for group in &groups {
            let first = group[0];
            let mut copy = message.clone();
            if let Some(id) = archive_id {
                copy.push_child(
                    Element::new("stanza-id", NS_SID)
                        .with_attr("id", id.hyphenated().to_string())
                        .with_attr("by", room_address(room, &first.service)),
                );
            }
            copy.set_attr("from", occupant_address(room, first, &nick));
            copy.set_attr("to", first.jid.as_str());
            out.deliver_message_to_all(group, &copy);
        }
        if body.is_none() {
            return;
        }
        let keep = self.config.history_length(&room.config);
        if let Some(jid) = room.occupants.get(&nick).map(|o| o.jid.clone()) {
            room.history.push(HistoryMessage {
                nick: nick.clone(),
                jid,
                xml: message.to_xml(),
                at: ctx.stanza.received_at,
            });
        }
        let excess = room.history.len().saturating_sub(keep);
        room.history.drain(..excess);
        let mut archived = message.clone();
        archived.set_attr("from", format!("{}/{nick}", room.jid));
        if let Some(archive_id) = archive_id {
            let mut stored = archived.clone();
            stored.push_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("id", archive_id.hyphenated().to_string())
                    .with_attr("by", room.jid.as_str()),
            );
            out.outputs.push(Output::Archive(ArchivedMessage {
                archive_id,
                event_id: ctx.stanza.event_id,
                owner: room.jid.clone(),
                with: Jid::from(ctx.stanza.sender.clone()),
                direction: Direction::Inbound,
                timestamp: ctx.stanza.received_at,
                xml: stored.to_xml(),
            }));
        }
        let recipients: BTreeSet<BareJid> = room.occupants.values().map(|o| o.jid.bare()).collect();
        for recipient in recipients {
            out.outputs.push(Output::Compliance(compliance(
                ctx.stanza,
                room,
                &nick,
                &archived,
                recipient,
                MessageType::Groupchat,
            )));
        }
    }

    fn invitation(&self, ctx: &Ctx<'_>, slot: &mut Option<Room>, x: &Element, out: &mut Out) {
        let Some(room) = slot.as_mut() else {
            return ctx.no_room(out);
        };
        let room_from = room_address(room, ctx.service);
        let reason = |e: &Element| e.child("reason", NS_MUC_USER).map(Element::text);
        let mut invites = Vec::new();
        for child in x.children() {
            let target = child.attr("to").map(Jid::new);
            let target = match target {
                Some(Ok(target)) => target,
                _ => {
                    return ctx.refuse(
                        out,
                        Cond::JidMalformed,
                        StanzaErrorType::Modify,
                        "An invitation or decline needs a valid 'to' address",
                    );
                }
            };
            match child.name() {
                "invite" => invites.push((target, reason(child))),
                "decline" => {
                    let mut decline = Element::new("decline", NS_MUC_USER)
                        .with_attr("from", ctx.sender().bare().as_str());
                    if let Some(reason) = reason(child) {
                        decline.push_child(text_el("reason", NS_MUC_USER, reason));
                    }
                    let message = Element::new("message", NS_CLIENT)
                        .with_attr("from", room_from.as_str())
                        .with_attr("to", target.as_str())
                        .with_child(Element::new("x", NS_MUC_USER).with_child(decline));
                    out.route(ctx.stanza, target, &message);
                }
                _ => {}
            }
        }
        if invites.is_empty() {
            return;
        }
        if room.nick_of(ctx.sender()).is_none() {
            return ctx.refuse(
                out,
                Cond::NotAcceptable,
                StanzaErrorType::Modify,
                "Only occupants may invite others to the room",
            );
        }
        let inviter = room.affiliation(&ctx.sender().bare());
        if room.config.members_only && inviter < Affiliation::Admin && !room.config.allow_invites {
            return ctx.refuse(
                out,
                Cond::Forbidden,
                StanzaErrorType::Auth,
                "Only admins and owners may invite others to this members-only room",
            );
        }
        for (target, reason) in invites {
            let user = target.bare();
            if room.config.members_only && room.affiliation(&user) == Affiliation::None {
                // An invitation into a members-only room makes the invitee a member.
                room.set_affiliation(user, Affiliation::Member);
            }
            let mut invite =
                Element::new("invite", NS_MUC_USER).with_attr("from", ctx.sender().as_str());
            if let Some(reason) = reason {
                invite.push_child(text_el("reason", NS_MUC_USER, reason));
            }
            let mut x = Element::new("x", NS_MUC_USER).with_child(invite);
            if let Some(password) = &room.config.password {
                x.push_child(text_el("password", NS_MUC_USER, password));
            }
            let message = Element::new("message", NS_CLIENT)
                .with_attr("from", room_from.as_str())
                .with_attr("to", target.as_str())
                .with_child(x);
            out.route(ctx.stanza, target, &message);
        }
    }
}

fn private_message(ctx: &Ctx<'_>, room: &mut Room, target: &str, out: &mut Out) {
    let Some(nick) = room.nick_of(ctx.sender()).map(str::to_owned) else {
        return ctx.refuse(
            out,
            Cond::NotAcceptable,
            StanzaErrorType::Modify,
            "Only occupants may send private messages in the room",
        );
    };
    let Some(recipient) = room.occupants.get(target) else {
        return ctx.refuse(
            out,
            Cond::ItemNotFound,
            StanzaErrorType::Cancel,
            "No occupant has that nickname",
        );
    };
    let mut message = ctx.element.clone();
    message.set_attr("from", occupant_address(room, recipient, &nick));
    message.set_attr("to", recipient.jid.as_str());
    message.push_child(Element::new("x", NS_MUC_USER));
    out.deliver_message(recipient, &message);
    if message.child("body", NS_CLIENT).is_some() {
        let mut archived = message.clone();
        archived.set_attr("from", format!("{}/{nick}", room.jid));
        let record = compliance(
            ctx.stanza,
            room,
            &nick,
            &archived,
            recipient.jid.bare(),
            MessageType::Chat,
        );
        out.outputs.push(Output::Compliance(record));
    }
}

// IQs to a room or an occupant.
impl Rooms {
    fn iq(&self, ctx: &Ctx<'_>, slot: &mut Option<Room>, nick: Option<String>, out: &mut Out) {
        let kind = ctx.element.attr("type").unwrap_or("");
        let Some(room) = slot.as_mut() else {
            if kind == "get" || kind == "set" {
                ctx.no_room(out);
            }
            return;
        };
        if let Some(target) = nick {
            return forward_iq(ctx, room, &target, out);
        }
        if kind != "get" && kind != "set" {
            return;
        }
        let Some(query) = ctx.element.children().next() else {
            return ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "The request has no payload",
            );
        };
        let owner = room.affiliation(&ctx.sender().bare()) == Affiliation::Owner;
        if room.locked && !owner {
            return ctx.no_room(out);
        }
        match (kind, query.name(), query.namespace()) {
            ("get", "query", NS_DISCO_INFO) => ctx.answer(out, Some(self.room_info(room))),
            ("get", "query", NS_DISCO_ITEMS) => {
                let mut items = Element::new("query", NS_DISCO_ITEMS);
                if room.config.public {
                    let from = room_address(room, ctx.service);
                    for nick in room.occupants.keys() {
                        items.push_child(
                            Element::new("item", NS_DISCO_ITEMS)
                                .with_attr("jid", format!("{from}/{nick}"))
                                .with_attr("name", nick.as_str()),
                        );
                    }
                }
                ctx.answer(out, Some(items));
            }
            ("get", "query", NS_MAM) => {
                ctx.answer(out, Some(imbus_archive::query_form(true)));
            }
            ("set", "query", NS_MAM) => self.archive_query(ctx, room, out),
            (_, "query", NS_MUC_OWNER) => self.owner_iq(ctx, room, query, out),
            (_, "query", NS_MUC_ADMIN) => admin_iq(ctx, room, query, out),
            _ => ctx.refuse(
                out,
                Cond::ServiceUnavailable,
                StanzaErrorType::Cancel,
                "The room does not answer this request",
            ),
        }
    }

    /// Hands an archive query (XEP-0313) to the room-archive connector, when the room
    /// keeps an archive and the sender may read it: occupants, and users who could enter
    /// (affiliated users; anyone but outcasts in an open room without password).
    fn archive_query(&self, ctx: &Ctx<'_>, room: &Room, out: &mut Out) {
        if !room.config.persistent {
            return ctx.refuse(
                out,
                Cond::ServiceUnavailable,
                StanzaErrorType::Cancel,
                "This room keeps no archive: only persistent rooms are archived",
            );
        }
        let user = ctx.sender().bare();
        let affiliation = room.affiliation(&user);
        let occupant = room.nick_of(ctx.sender()).is_some();
        let allowed = affiliation != Affiliation::Outcast
            && (occupant
                || affiliation >= Affiliation::Member
                || (!room.config.members_only && room.config.password.is_none()));
        if !allowed {
            return ctx.refuse(
                out,
                Cond::Forbidden,
                StanzaErrorType::Auth,
                "Only occupants and members may read this room's archive",
            );
        }
        out.outputs.push(Output::ArchiveQuery(ctx.stanza.clone()));
    }

    /// The disco#info of a room (XEP-0045 §6.4).
    fn room_info(&self, room: &Room) -> Element {
        let c = &room.config;
        let name = c.name.clone().unwrap_or_else(|| room.node().to_owned());
        let mut query = Element::new("query", NS_DISCO_INFO).with_child(
            Element::new("identity", NS_DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", name),
        );
        let features = [
            NS_MUC,
            if c.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if c.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if c.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            if c.public { "muc_public" } else { "muc_hidden" },
            if c.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            match c.whois {
                Whois::Moderators => "muc_semianonymous",
                Whois::Anyone => "muc_nonanonymous",
            },
        ];
        let archive: &[&str] = if c.persistent {
            &[NS_MAM, imbus_archive::NS_FULLTEXT, NS_SID]
        } else {
            &[]
        };
        for feature in features.iter().chain(archive) {
            query.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", *feature));
        }
        let subject = room.subject.as_ref().map(|s| s.text.as_str()).unwrap_or("");
        let form = form("result", NS_ROOMINFO)
            .with_child(field(
                "muc#roominfo_description",
                "text-single",
                Some("Description"),
                [c.description.as_deref().unwrap_or("")],
            ))
            .with_child(field(
                "muc#roominfo_subject",
                "text-single",
                Some("Subject"),
                [subject],
            ))
            .with_child(field(
                "muc#roominfo_occupants",
                "text-single",
                Some("Number of occupants"),
                [room.occupants.len().to_string()],
            ));
        query.push_child(form);
        query
    }

    fn owner_iq(&self, ctx: &Ctx<'_>, room: &mut Room, query: &Element, out: &mut Out) {
        if room.affiliation(&ctx.sender().bare()) != Affiliation::Owner {
            return ctx.refuse(
                out,
                Cond::Forbidden,
                StanzaErrorType::Auth,
                "Only owners may configure or destroy the room",
            );
        }
        if ctx.element.attr("type") == Some("get") {
            let query = Element::new("query", NS_MUC_OWNER).with_child(self.config_form(room));
            return ctx.answer(out, Some(query));
        }
        if let Some(destroy) = query.child("destroy", NS_MUC_OWNER) {
            destroy_room(room, Some(destroy), out);
            return ctx.answer(out, None);
        }
        let Some(x) = query.child("x", NS_DATA) else {
            return ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "Submit the room configuration form or a destroy request",
            );
        };
        match x.attr("type") {
            Some("cancel") => {
                if room.locked {
                    // The owner gave up creating the room (XEP-0045 §10.1.3).
                    destroy_room(room, None, out);
                }
                ctx.answer(out, None)
            }
            Some("submit") => match self.apply_form(&room.config, x) {
                Ok(config) => {
                    let was_locked = room.locked;
                    room.locked = false;
                    let members_only = config.members_only && !room.config.members_only;
                    room.config = config;
                    let keep = self.config.history_length(&room.config);
                    let excess = room.history.len().saturating_sub(keep);
                    room.history.drain(..excess);
                    ctx.answer(out, None);
                    if members_only {
                        // Occupants that are not members leave a room turned members-only.
                        let outsiders: Vec<String> = room
                            .occupants
                            .iter()
                            .filter(|(_, o)| room.affiliation(&o.jid.bare()) < Affiliation::Member)
                            .map(|(n, _)| n.clone())
                            .collect();
                        let notice = Notice {
                            codes: &[322],
                            ..Notice::default()
                        };
                        for nick in outsiders {
                            remove_occupant(room, &nick, &notice, true, out);
                        }
                    }
                    if !was_locked {
                        for occupant in room.occupants.values() {
                            let message = Element::new("message", NS_CLIENT)
                                .with_attr("type", "groupchat")
                                .with_attr("from", room_address(room, &occupant.service))
                                .with_attr("to", occupant.jid.as_str())
                                .with_child(Element::new("x", NS_MUC_USER).with_child(
                                    Element::new("status", NS_MUC_USER).with_attr("code", "104"),
                                ));
                            out.deliver(occupant, &message);
                        }
                    }
                }
                Err((condition, text)) => {
                    ctx.refuse(out, condition, condition.default_type(), &text)
                }
            },
            _ => ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "The configuration form must be of type submit or cancel",
            ),
        }
    }

    /// The `muc#roomconfig` form with the room's current values.
    fn config_form(&self, room: &Room) -> Element {
        let c = &room.config;
        let max_users = c.max_users.map_or("none".to_owned(), |n| n.to_string());
        let mut max_options: Vec<(String, String)> = ["10", "20", "30", "50", "100"]
            .iter()
            .map(|v| ((*v).to_owned(), (*v).to_owned()))
            .collect();
        if !max_options.iter().any(|(_, v)| *v == max_users) && max_users != "none" {
            max_options.push((max_users.clone(), max_users.clone()));
        }
        max_options.push(("No limit".to_owned(), "none".to_owned()));
        let options: Vec<(&str, &str)> = max_options
            .iter()
            .map(|(l, v)| (l.as_str(), v.as_str()))
            .collect();
        let history = self.config.history_length(c).to_string();
        form("form", NS_ROOMCONFIG)
            .with_child(text_el(
                "title",
                NS_DATA,
                format!("Configuration of {}", room.jid),
            ))
            .with_child(field(
                "muc#roomconfig_roomname",
                "text-single",
                Some("Room name"),
                [c.name.as_deref().unwrap_or("")],
            ))
            .with_child(field(
                "muc#roomconfig_roomdesc",
                "text-single",
                Some("Description"),
                [c.description.as_deref().unwrap_or("")],
            ))
            .with_child(field(
                "muc#roomconfig_persistentroom",
                "boolean",
                Some("Persistent room (kept when the last occupant leaves)"),
                [bool_str(c.persistent)],
            ))
            .with_child(field(
                "muc#roomconfig_publicroom",
                "boolean",
                Some("Listed in the room directory and search"),
                [bool_str(c.public)],
            ))
            .with_child(field(
                "muc#roomconfig_membersonly",
                "boolean",
                Some("Members only"),
                [bool_str(c.members_only)],
            ))
            .with_child(field(
                "muc#roomconfig_passwordprotectedroom",
                "boolean",
                Some("Password required to enter"),
                [bool_str(c.password.is_some())],
            ))
            .with_child(field(
                "muc#roomconfig_roomsecret",
                "text-private",
                Some("Password"),
                [c.password.as_deref().unwrap_or("")],
            ))
            .with_child(field(
                "muc#roomconfig_moderatedroom",
                "boolean",
                Some("Moderated (only occupants with voice may speak)"),
                [bool_str(c.moderated)],
            ))
            .with_child(list_field(
                "muc#roomconfig_maxusers",
                "Maximum number of occupants",
                &max_users,
                &options,
            ))
            .with_child(list_field(
                "muc#roomconfig_whois",
                "Who may see real JIDs",
                c.whois.as_str(),
                &[("Moderators", "moderators"), ("Anyone", "anyone")],
            ))
            .with_child(field(
                "muc#maxhistoryfetch",
                "text-single",
                Some(&format!(
                    "Messages of history sent to new occupants (at most {})",
                    self.config.max_history_length
                )),
                [history],
            ))
            .with_child(field(
                "muc#roomconfig_changesubject",
                "boolean",
                Some("Participants may change the subject"),
                [bool_str(c.change_subject)],
            ))
            .with_child(field(
                "muc#roomconfig_allowinvites",
                "boolean",
                Some("Occupants may invite others into a members-only room"),
                [bool_str(c.allow_invites)],
            ))
    }

    /// The configuration a submitted form asks for; fields left out keep their value.
    fn apply_form(&self, current: &RoomConfig, x: &Element) -> Result<RoomConfig, (Cond, String)> {
        let values = submitted(x);
        let mut c = current.clone();
        let bad = |var: &str| (Cond::BadRequest, format!("Invalid value for {var}"));
        let text = |var: &str| -> Option<Option<String>> {
            values.get(var).map(|v| {
                v.first()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            })
        };
        let flag = |var: &str, into: &mut bool| -> Result<(), (Cond, String)> {
            if let Some(v) = values.get(var) {
                *into = form_bool(v).ok_or_else(|| bad(var))?;
            }
            Ok(())
        };
        if let Some(name) = text("muc#roomconfig_roomname") {
            c.name = name;
        }
        if let Some(description) = text("muc#roomconfig_roomdesc") {
            c.description = description;
        }
        flag("muc#roomconfig_persistentroom", &mut c.persistent)?;
        if c.persistent && !current.persistent && !self.config.persistent_chat {
            return Err((
                Cond::NotAcceptable,
                "Persistent chat is disabled on this server: rooms cannot be made persistent"
                    .to_owned(),
            ));
        }
        flag("muc#roomconfig_publicroom", &mut c.public)?;
        flag("muc#roomconfig_membersonly", &mut c.members_only)?;
        flag("muc#roomconfig_moderatedroom", &mut c.moderated)?;
        flag("muc#roomconfig_changesubject", &mut c.change_subject)?;
        flag("muc#roomconfig_allowinvites", &mut c.allow_invites)?;
        let mut protected = current.password.is_some();
        flag("muc#roomconfig_passwordprotectedroom", &mut protected)?;
        let secret = text("muc#roomconfig_roomsecret").unwrap_or_else(|| current.password.clone());
        c.password = match (protected, secret) {
            (false, _) => None,
            (true, Some(secret)) => Some(secret),
            (true, None) => {
                return Err((
                    Cond::NotAcceptable,
                    "A password-protected room needs a password (muc#roomconfig_roomsecret)"
                        .to_owned(),
                ));
            }
        };
        if let Some(max) = text("muc#roomconfig_maxusers") {
            c.max_users = match max.as_deref() {
                None | Some("none") | Some("0") => None,
                Some(n) => Some(
                    n.parse::<usize>()
                        .map_err(|_| bad("muc#roomconfig_maxusers"))?,
                ),
            };
        }
        if let Some(whois) = text("muc#roomconfig_whois") {
            c.whois = match whois.as_deref() {
                Some("moderators") => Whois::Moderators,
                Some("anyone") => Whois::Anyone,
                _ => return Err(bad("muc#roomconfig_whois")),
            };
        }
        for var in ["muc#maxhistoryfetch", "muc#roomconfig_historylength"] {
            if let Some(Some(n)) = text(var) {
                let n: usize = n.parse().map_err(|_| bad(var))?;
                // Resubmitting the shown value keeps following the service setting.
                if n != self.config.history_length(current) || current.history_length.is_some() {
                    c.history_length = Some(n.min(self.config.max_history_length));
                }
            }
        }
        Ok(c)
    }
}

/// Ends a room: every occupant gets its unavailable presence with the `<destroy/>`
/// (XEP-0045 §10.9).
fn destroy_room(room: &mut Room, destroy: Option<&Element>, out: &mut Out) {
    for (nick, occupant) in &room.occupants {
        let mut notice = Element::new("destroy", NS_MUC_USER);
        if let Some(destroy) = destroy {
            if let Some(alternate) = destroy.attr("jid") {
                notice.set_attr("jid", alternate);
            }
            if let Some(reason) = destroy.child("reason", NS_MUC_OWNER) {
                notice.push_child(text_el("reason", NS_MUC_USER, reason.text()));
            }
        }
        let presence = Element::new("presence", NS_CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", occupant_address(room, occupant, nick))
            .with_attr("to", occupant.jid.as_str())
            .with_child(
                Element::new("x", NS_MUC_USER)
                    .with_child(
                        Element::new("item", NS_MUC_USER)
                            .with_attr("affiliation", "none")
                            .with_attr("role", "none"),
                    )
                    .with_child(notice),
            );
        out.deliver(occupant, &presence);
    }
    room.occupants.clear();
    out.destroyed = true;
}

/// An IQ to an occupant: forwarded from one occupant to another (requests, and the
/// answers back), from the sender's room address.
fn forward_iq(ctx: &Ctx<'_>, room: &Room, target: &str, out: &mut Out) {
    let kind = ctx.element.attr("type").unwrap_or("");
    let request = kind == "get" || kind == "set";
    let Some(nick) = room.nick_of(ctx.sender()) else {
        if request {
            ctx.refuse(
                out,
                Cond::NotAcceptable,
                StanzaErrorType::Modify,
                "Only occupants may send requests to other occupants",
            );
        }
        return;
    };
    let Some(recipient) = room.occupants.get(target) else {
        if request {
            ctx.refuse(
                out,
                Cond::ItemNotFound,
                StanzaErrorType::Cancel,
                "No occupant has that nickname",
            );
        }
        return;
    };
    let mut iq = ctx.element.clone();
    iq.set_attr("from", occupant_address(room, recipient, nick));
    iq.set_attr("to", recipient.jid.as_str());
    out.deliver(recipient, &iq);
}

/// `muc#admin`: affiliation and role lists and changes (XEP-0045 §8, §9, §10).
fn admin_iq(ctx: &Ctx<'_>, room: &mut Room, query: &Element, out: &mut Out) {
    let actor_jid = ctx.sender().bare();
    let actor = room.affiliation(&actor_jid);
    let actor_nick = room.nick_of(ctx.sender()).map(str::to_owned);
    let actor_role = actor_nick
        .as_ref()
        .and_then(|n| room.occupants.get(n))
        .map_or(Role::None, |o| o.role);
    let items: Vec<&Element> = query
        .children()
        .filter(|c| c.is("item", NS_MUC_ADMIN))
        .collect();
    let Some(first) = items.first() else {
        return ctx.refuse(
            out,
            Cond::BadRequest,
            StanzaErrorType::Modify,
            "The request needs at least one item",
        );
    };
    if ctx.element.attr("type") == Some("get") {
        let mut result = Element::new("query", NS_MUC_ADMIN);
        if let Some(affiliation) = first.attr("affiliation").and_then(Affiliation::parse) {
            if actor < Affiliation::Admin {
                return ctx.refuse(
                    out,
                    Cond::Forbidden,
                    StanzaErrorType::Auth,
                    "Only admins and owners may see affiliation lists",
                );
            }
            for (jid, _) in room.affiliations.iter().filter(|(_, a)| **a == affiliation) {
                result.push_child(
                    Element::new("item", NS_MUC_ADMIN)
                        .with_attr("affiliation", affiliation.as_str())
                        .with_attr("jid", jid.as_str()),
                );
            }
        } else if let Some(role) = first.attr("role").and_then(Role::parse) {
            if actor_role != Role::Moderator {
                return ctx.refuse(
                    out,
                    Cond::Forbidden,
                    StanzaErrorType::Auth,
                    "Only moderators may see role lists",
                );
            }
            for (nick, occupant) in room.occupants.iter().filter(|(_, o)| o.role == role) {
                result.push_child(
                    Element::new("item", NS_MUC_ADMIN)
                        .with_attr(
                            "affiliation",
                            room.affiliation(&occupant.jid.bare()).as_str(),
                        )
                        .with_attr("jid", occupant.jid.as_str())
                        .with_attr("nick", nick.as_str())
                        .with_attr("role", role.as_str()),
                );
            }
        } else {
            return ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "Ask for an affiliation or a role",
            );
        }
        return ctx.answer(out, Some(result));
    }
    // Check every change first: the request is applied whole or not at all.
    let mut changes = Vec::new();
    let mut owners: BTreeSet<BareJid> = room.owners().cloned().collect();
    for item in &items {
        let reason = item.child("reason", NS_MUC_ADMIN).map(Element::text);
        let by_nick = item
            .attr("nick")
            .and_then(|n| room.occupants.get(n).map(|o| (n, o)));
        if let Some(affiliation) = item.attr("affiliation") {
            let Some(affiliation) = Affiliation::parse(affiliation) else {
                return ctx.refuse(
                    out,
                    Cond::BadRequest,
                    StanzaErrorType::Modify,
                    "Unknown affiliation",
                );
            };
            let user = match (item.attr("jid").map(Jid::new), by_nick) {
                (Some(Ok(jid)), _) => jid.bare(),
                (None, Some((_, occupant))) => occupant.jid.bare(),
                _ => {
                    return ctx.refuse(
                        out,
                        Cond::BadRequest,
                        StanzaErrorType::Modify,
                        "An affiliation change needs a valid jid (or the nickname of an occupant)",
                    );
                }
            };
            if actor < Affiliation::Admin {
                return ctx.refuse(
                    out,
                    Cond::Forbidden,
                    StanzaErrorType::Auth,
                    "Only admins and owners may change affiliations",
                );
            }
            let current = room.affiliation(&user);
            if actor != Affiliation::Owner
                && (current >= Affiliation::Admin || affiliation >= Affiliation::Admin)
            {
                return ctx.refuse(
                    out,
                    Cond::NotAllowed,
                    StanzaErrorType::Cancel,
                    "Only owners may change the affiliation of admins and owners",
                );
            }
            if affiliation == Affiliation::Owner {
                owners.insert(user.clone());
            } else {
                owners.remove(&user);
            }
            changes.push(Change::Affiliation {
                user,
                affiliation,
                reason,
            });
        } else if let Some(role) = item.attr("role") {
            let Some(role) = Role::parse(role) else {
                return ctx.refuse(
                    out,
                    Cond::BadRequest,
                    StanzaErrorType::Modify,
                    "Unknown role",
                );
            };
            let Some((nick, occupant)) = by_nick else {
                return ctx.refuse(
                    out,
                    Cond::ItemNotFound,
                    StanzaErrorType::Cancel,
                    "No occupant has that nickname",
                );
            };
            if actor_role != Role::Moderator {
                return ctx.refuse(
                    out,
                    Cond::Forbidden,
                    StanzaErrorType::Auth,
                    "Only moderators may change roles",
                );
            }
            let target = room.affiliation(&occupant.jid.bare());
            if role < Role::Moderator && target >= Affiliation::Admin {
                return ctx.refuse(
                    out,
                    Cond::NotAllowed,
                    StanzaErrorType::Cancel,
                    "Admins and owners cannot be kicked or lose their role",
                );
            }
            if (role == Role::Moderator || occupant.role == Role::Moderator)
                && actor < Affiliation::Admin
            {
                return ctx.refuse(
                    out,
                    Cond::NotAllowed,
                    StanzaErrorType::Cancel,
                    "Only admins and owners may grant or revoke moderation",
                );
            }
            changes.push(Change::Role {
                nick: nick.to_owned(),
                role,
                reason,
            });
        } else {
            return ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "Each item needs a role or an affiliation",
            );
        }
    }
    if owners.is_empty() {
        return ctx.refuse(
            out,
            Cond::Conflict,
            StanzaErrorType::Cancel,
            "A room needs at least one owner",
        );
    }
    ctx.answer(out, None);
    let actor_nick = actor_nick.as_deref();
    for change in changes {
        match change {
            Change::Role { nick, role, reason } => {
                let notice = Notice {
                    codes: if role == Role::None { &[307] } else { &[] },
                    reason: reason.as_deref(),
                    actor: actor_nick,
                    ..Notice::default()
                };
                if role == Role::None {
                    remove_occupant(room, &nick, &notice, true, out);
                } else if let Some(occupant) = room.occupants.get_mut(&nick) {
                    occupant.role = role;
                    broadcast_presence(room, &nick, role, &notice, out);
                }
            }
            Change::Affiliation {
                user,
                affiliation,
                reason,
            } => {
                room.set_affiliation(user.clone(), affiliation);
                let nicks: Vec<String> = room
                    .occupants
                    .iter()
                    .filter(|(_, o)| o.jid.bare() == user)
                    .map(|(n, _)| n.clone())
                    .collect();
                let removed: &[u16] = match affiliation {
                    Affiliation::Outcast => &[301],
                    Affiliation::None if room.config.members_only => &[321],
                    _ => &[],
                };
                for nick in nicks {
                    let notice = Notice {
                        codes: removed,
                        reason: reason.as_deref(),
                        actor: actor_nick,
                        ..Notice::default()
                    };
                    if removed.is_empty() {
                        let role = room.default_role(affiliation);
                        if let Some(occupant) = room.occupants.get_mut(&nick) {
                            occupant.role = role;
                        }
                        broadcast_presence(room, &nick, role, &notice, out);
                    } else {
                        remove_occupant(room, &nick, &notice, true, out);
                    }
                }
            }
        }
    }
}

// The service itself: discovery, the room directory, room search.
impl Rooms {
    fn service_stanza(
        &self,
        stanza: &StanzaReceived,
        element: &Element,
        service: &str,
        out: &mut Out,
    ) {
        let ctx = Ctx {
            stanza,
            element,
            service,
        };
        let kind = element.attr("type").unwrap_or("");
        match stanza.kind {
            StanzaKind::Iq if kind == "get" || kind == "set" => {}
            StanzaKind::Message if kind != "error" => {
                return ctx.refuse(
                    out,
                    Cond::ServiceUnavailable,
                    StanzaErrorType::Cancel,
                    "The chat service takes messages for its rooms, not for itself",
                );
            }
            _ => return,
        }
        let Some(query) = element.children().next() else {
            return ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "The request has no payload",
            );
        };
        match (kind, query.name(), query.namespace()) {
            ("get", "query", NS_DISCO_INFO) => {
                let mut info = Element::new("query", NS_DISCO_INFO).with_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "conference")
                        .with_attr("type", "text")
                        .with_attr("name", self.config.name.as_str()),
                );
                for feature in [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, NS_RSM, NS_SEARCH] {
                    info.push_child(
                        Element::new("feature", NS_DISCO_INFO).with_attr("var", feature),
                    );
                }
                ctx.answer(out, Some(info));
            }
            ("get", "query", NS_DISCO_ITEMS) => {
                let rooms: Vec<&Room> = self.public_rooms().filter(|r| at(r, service)).collect();
                let keys: Vec<String> = rooms.iter().map(|r| room_address(r, service)).collect();
                let (range, set) = self.page(&keys, query.child("set", NS_RSM));
                let mut items = Element::new("query", NS_DISCO_ITEMS);
                for (room, key) in rooms[range.clone()].iter().zip(&keys[range]) {
                    let name = room
                        .config
                        .name
                        .clone()
                        .unwrap_or_else(|| room.node().to_owned());
                    items.push_child(
                        Element::new("item", NS_DISCO_ITEMS)
                            .with_attr("jid", key.as_str())
                            .with_attr("name", name),
                    );
                }
                if let Some(set) = set {
                    items.push_child(set);
                }
                ctx.answer(out, Some(items));
            }
            ("get", "query", NS_SEARCH) => ctx.answer(out, Some(search_form())),
            ("set", "query", NS_SEARCH) => self.search(&ctx, query, out),
            _ => ctx.refuse(
                out,
                Cond::ServiceUnavailable,
                StanzaErrorType::Cancel,
                "The chat service does not answer this request",
            ),
        }
    }

    /// The rooms listed in discovery and search (of every partition), sorted by JID.
    fn public_rooms(&self) -> impl Iterator<Item = &Room> {
        let mut rooms: Vec<&Room> = self
            .rooms
            .values()
            .chain(
                self.elsewhere
                    .iter()
                    .filter(|(jid, _)| !self.rooms.contains_key(*jid))
                    .map(|(_, r)| r),
            )
            .filter(|r| r.config.public && !r.locked)
            .collect();
        rooms.sort_by(|a, b| a.jid.cmp(&b.jid));
        rooms.into_iter()
    }

    /// Result Set Management (XEP-0059) over sorted keys: the page asked for, and the
    /// `<set/>` describing it (`None` when the client did not ask for paging).
    fn page(
        &self,
        keys: &[String],
        set: Option<&Element>,
    ) -> (std::ops::Range<usize>, Option<Element>) {
        let Some(set) = set else {
            return (0..keys.len().min(self.config.max_items), None);
        };
        let child = |name: &str| set.child(name, NS_RSM).map(Element::text);
        let max = child("max")
            .and_then(|m| m.trim().parse::<usize>().ok())
            .unwrap_or(self.config.max_items)
            .min(self.config.max_items);
        let range = if let Some(after) = child("after") {
            let start = keys.partition_point(|k| k.as_str() <= after.as_str());
            start..(start + max).min(keys.len())
        } else if let Some(before) = child("before") {
            let end = if before.is_empty() {
                keys.len()
            } else {
                keys.partition_point(|k| k.as_str() < before.as_str())
            };
            end.saturating_sub(max)..end
        } else {
            let start = child("index")
                .and_then(|i| i.trim().parse::<usize>().ok())
                .unwrap_or(0)
                .min(keys.len());
            start..(start + max).min(keys.len())
        };
        let mut result = Element::new("set", NS_RSM);
        if !range.is_empty() {
            result.push_child(
                text_el("first", NS_RSM, &keys[range.start])
                    .with_attr("index", range.start.to_string()),
            );
            result.push_child(text_el("last", NS_RSM, &keys[range.end - 1]));
        }
        result.push_child(text_el("count", NS_RSM, keys.len().to_string()));
        (range, Some(result))
    }

    /// Room search: public rooms whose name, description and subject contain the
    /// submitted texts (case-insensitive).
    fn search(&self, ctx: &Ctx<'_>, query: &Element, out: &mut Out) {
        let Some(x) = query
            .child("x", NS_DATA)
            .filter(|x| x.attr("type") == Some("submit"))
        else {
            return ctx.refuse(
                out,
                Cond::BadRequest,
                StanzaErrorType::Modify,
                "Submit the room search form (see the form this service returns to a get)",
            );
        };
        let values = submitted(x);
        let wanted = |var: &str| {
            values
                .get(var)
                .and_then(|v| v.first())
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
        };
        let criteria = [
            ("name", wanted("name")),
            ("description", wanted("description")),
            ("subject", wanted("subject")),
        ];
        let matches = |room: &Room| {
            criteria.iter().all(|(var, wanted)| {
                let Some(wanted) = wanted else { return true };
                let text = match *var {
                    "name" => room
                        .config
                        .name
                        .clone()
                        .unwrap_or_else(|| room.node().to_owned()),
                    "description" => room.config.description.clone().unwrap_or_default(),
                    _ => room
                        .subject
                        .as_ref()
                        .map(|s| s.text.clone())
                        .unwrap_or_default(),
                };
                text.to_lowercase().contains(wanted.as_str())
            })
        };
        let rooms: Vec<&Room> = self
            .public_rooms()
            .filter(|r| at(r, ctx.service) && matches(r))
            .collect();
        let keys: Vec<String> = rooms.iter().map(|r| room_address(r, ctx.service)).collect();
        let (range, set) = self.page(&keys, query.child("set", NS_RSM));
        let mut result = form("result", NS_SEARCH);
        let mut reported = Element::new("reported", NS_DATA);
        for (var, label) in [
            ("jid", "Room address"),
            ("name", "Name"),
            ("description", "Description"),
            ("subject", "Subject"),
            ("occupants", "Occupants"),
        ] {
            reported.push_child(field(var, "", Some(label), std::iter::empty::<&str>()));
        }
        result.push_child(reported);
        for (room, key) in rooms[range.clone()].iter().zip(&keys[range]) {
            let name = room
                .config
                .name
                .clone()
                .unwrap_or_else(|| room.node().to_owned());
            let subject = room
                .subject
                .as_ref()
                .map(|s| s.text.clone())
                .unwrap_or_default();
            let item = Element::new("item", NS_DATA)
                .with_child(field("jid", "", None, [key.as_str()]))
                .with_child(field("name", "", None, [name]))
                .with_child(field(
                    "description",
                    "",
                    None,
                    [room.config.description.clone().unwrap_or_default()],
                ))
                .with_child(field("subject", "", None, [subject]))
                .with_child(field(
                    "occupants",
                    "",
                    None,
                    [room.occupants.len().to_string()],
                ));
            result.push_child(item);
        }
        let mut answer = Element::new("query", NS_SEARCH).with_child(result);
        if let Some(set) = set {
            answer.push_child(set);
        }
        ctx.answer(out, Some(answer));
    }
}

/// The room search form (see the crate documentation).
fn search_form() -> Element {
    Element::new("query", NS_SEARCH)
        .with_child(text_el(
            "instructions",
            NS_SEARCH,
            "Fill in any of the fields to find public rooms whose name, description or \
             subject contains the text (case does not matter); leave all empty to list \
             every public room.",
        ))
        .with_child(
            form("form", NS_SEARCH)
                .with_child(text_el("title", NS_DATA, "Room search"))
                .with_child(field("name", "text-single", Some("Name contains"), [""; 0]))
                .with_child(field(
                    "description",
                    "text-single",
                    Some("Description contains"),
                    [""; 0],
                ))
                .with_child(field(
                    "subject",
                    "text-single",
                    Some("Subject contains"),
                    [""; 0],
                )),
        )
}

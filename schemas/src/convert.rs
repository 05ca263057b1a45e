//! Conversions between the domain events of `imbus-core` and Avro values of the current
//! schemas.

use apache_avro::types::Value;
use imbus_core::{
    AccountDeleted, AccountEvent, AccountState, Affiliation, ArchivedMessage, Availability,
    ClientFeatures, CloseReason, ComplianceRecord, ConfigChanged, ConfigKey, Credentials, Delivery,
    DeliveryCopy, Direction, Event, GatewayId, HistoryMessage, MessageType, Occupant,
    OfflineDelivered, OfflineEvent, OfflineExpired, OfflineStored, Origin, Role, Room, RoomConfig,
    RosterChanged, ScramCredentials, ScramHash, SessionClosed, SessionEvent, SessionId,
    SessionPresence, SessionState, StanzaKind, StanzaReceived, Subject, Subscription,
    UserDataChanged, Whois,
};

use crate::EventSchema;
use crate::error::{FieldProblem, SchemaError};
use crate::value::{
    Fields, opt_long, opt_record, opt_string, opt_timestamp, record, records, string, symbol,
    timestamp, uuid,
};

/// Maps a domain enum to the symbols of its Avro enum and back.
macro_rules! symbols {
    ($ty:ident, $to:ident, $from:ident { $($variant:ident => $sym:literal),* $(,)? }) => {
        fn $to(value: $ty) -> &'static str {
            match value {
                $($ty::$variant => $sym,)*
            }
        }

        fn $from(symbol: &str) -> Option<$ty> {
            match symbol {
                $($sym => Some($ty::$variant),)*
                _ => None,
            }
        }
    };
}

symbols!(StanzaKind, kind_symbol, kind_from {
    Message => "MESSAGE",
    Presence => "PRESENCE",
    Iq => "IQ",
});

symbols!(Availability, availability_symbol, availability_from {
    Unavailable => "UNAVAILABLE",
    Available => "AVAILABLE",
    Chat => "CHAT",
    Away => "AWAY",
    ExtendedAway => "XA",
    DoNotDisturb => "DND",
});

symbols!(CloseReason, reason_symbol, reason_from {
    ClientClosed => "CLIENT_CLOSED",
    ConnectionLost => "CONNECTION_LOST",
    Replaced => "REPLACED",
    StreamError => "STREAM_ERROR",
    AdminDisconnect => "ADMIN_DISCONNECT",
    GatewayShutdown => "GATEWAY_SHUTDOWN",
});

symbols!(Subscription, subscription_symbol, subscription_from {
    None => "NONE",
    To => "TO",
    From => "FROM",
    Both => "BOTH",
    Remove => "REMOVE",
});

symbols!(Direction, direction_symbol, direction_from {
    Inbound => "INBOUND",
    Outbound => "OUTBOUND",
});

symbols!(MessageType, message_type_symbol, message_type_from {
    Chat => "CHAT",
    Normal => "NORMAL",
    Groupchat => "GROUPCHAT",
    Headline => "HEADLINE",
});

symbols!(Origin, origin_symbol, origin_from {
    Local => "LOCAL",
    Intercluster => "INTERCLUSTER",
    Federated => "FEDERATED",
    Sip => "SIP",
});

symbols!(Whois, whois_symbol, whois_from {
    Moderators => "MODERATORS",
    Anyone => "ANYONE",
});

symbols!(Affiliation, affiliation_symbol, affiliation_from {
    Outcast => "OUTCAST",
    None => "NONE",
    Member => "MEMBER",
    Admin => "ADMIN",
    Owner => "OWNER",
});

symbols!(Role, role_symbol, role_from {
    None => "NONE",
    Visitor => "VISITOR",
    Participant => "PARTICIPANT",
    Moderator => "MODERATOR",
});

/// Whether this crate maps `symbol` of the Avro enum named `enum_name` to a domain value;
/// `None` if the enum itself is unknown.
#[cfg(test)]
pub(crate) fn symbol_is_known(enum_name: &str, symbol: &str) -> Option<bool> {
    Some(match enum_name {
        "StanzaKind" => kind_from(symbol).is_some(),
        "Availability" => availability_from(symbol).is_some(),
        "CloseReason" => reason_from(symbol).is_some(),
        "Subscription" => subscription_from(symbol).is_some(),
        "Direction" => direction_from(symbol).is_some(),
        "MessageType" => message_type_from(symbol).is_some(),
        "Origin" => origin_from(symbol).is_some(),
        "Whois" => whois_from(symbol).is_some(),
        "Affiliation" => affiliation_from(symbol).is_some(),
        "Role" => role_from(symbol).is_some(),
        _ => return None,
    })
}

/// Reads an enum field through its symbol mapping.
fn enum_field<T>(
    fields: &mut Fields,
    field: &str,
    from: fn(&str) -> Option<T>,
) -> Result<T, SchemaError> {
    let symbol = fields.symbol(field)?;
    match from(&symbol) {
        Some(value) => Ok(value),
        None => Err(fields.unknown_symbol(field, symbol)),
    }
}

fn gateway_id(fields: &mut Fields, field: &str) -> Result<GatewayId, SchemaError> {
    let s = fields.string(field)?;
    GatewayId::new(s).map_err(|e| fields.error(field, FieldProblem::Invalid(e)))
}

fn session_id(fields: &mut Fields, field: &str) -> Result<SessionId, SchemaError> {
    let s = fields.string(field)?;
    SessionId::new(s).map_err(|e| fields.error(field, FieldProblem::Invalid(e)))
}

// ---------------------------------------------------------------------------------------
// Domain -> Avro

/// The Avro value of an event, for the current schema of its kind.
pub(crate) fn to_value(event: &Event) -> Value {
    match event {
        Event::StanzaReceived(e) => stanza_received(e),
        Event::Session(e) => session_event(e),
        Event::Delivery(e) => delivery(e),
        Event::Offline(e) => offline_event(e),
        Event::Account(e) => account_event(e),
        Event::RosterChanged(e) => roster_changed(e),
        Event::Compliance(e) => compliance_record(e),
        Event::ConfigChanged(e) => config_changed(e),
        Event::UserData(e) => user_data_changed(e),
        Event::Archived(e) => archived_message(e),
        Event::RoomState(e) => room_state(e),
    }
}

fn stanza_received(e: &StanzaReceived) -> Value {
    record(vec![
        ("event_id", uuid(e.event_id)),
        ("gateway_id", string(e.gateway_id.as_str())),
        ("session_id", string(e.session_id.as_str())),
        ("received_at", timestamp(e.received_at)),
        ("sender", string(e.sender.as_str())),
        (
            "recipient",
            opt_string(e.recipient.as_ref().map(|j| j.as_str())),
        ),
        ("kind", symbol(kind_symbol(e.kind))),
        ("stanza_type", opt_string(e.stanza_type.as_deref())),
        ("stanza_id", opt_string(e.stanza_id.as_deref())),
        ("xml", string(&e.xml)),
    ])
}

fn session_state(s: &SessionState) -> Vec<(&'static str, Value)> {
    vec![
        ("user", string(s.jid.to_bare().as_str())),
        ("resource", string(s.resource())),
        ("gateway_id", string(s.gateway_id.as_str())),
        ("session_id", string(s.session_id.as_str())),
        ("at", timestamp(s.at)),
        (
            "presence",
            record(vec![
                (
                    "availability",
                    symbol(availability_symbol(s.presence.availability)),
                ),
                ("priority", Value::Int(i32::from(s.presence.priority))),
                ("status", opt_string(s.presence.status.as_deref())),
            ]),
        ),
        (
            "features",
            record(vec![
                ("carbons", Value::Boolean(s.features.carbons)),
                (
                    "roster_requested",
                    Value::Boolean(s.features.roster_requested),
                ),
            ]),
        ),
    ]
}

fn session_event(e: &SessionEvent) -> Value {
    let (mut bound, mut updated, mut closed) = (None, None, None);
    match e {
        SessionEvent::Bound(s) => bound = Some(session_state(s)),
        SessionEvent::Updated(s) => updated = Some(session_state(s)),
        SessionEvent::Closed(c) => {
            closed = Some(vec![
                ("user", string(c.jid.to_bare().as_str())),
                ("resource", string(c.jid.resource().as_str())),
                ("gateway_id", string(c.gateway_id.as_str())),
                ("session_id", string(c.session_id.as_str())),
                ("at", timestamp(c.at)),
                ("reason", symbol(reason_symbol(c.reason))),
                ("detail", opt_string(c.detail.as_deref())),
            ])
        }
    }
    record(vec![
        ("bound", opt_record(bound)),
        ("updated", opt_record(updated)),
        ("closed", opt_record(closed)),
    ])
}

fn delivery(e: &Delivery) -> Value {
    record(vec![
        ("event_id", uuid(e.event_id)),
        ("source_event_id", uuid(e.source_event_id)),
        ("to", string(e.to.as_str())),
        ("gateway_id", string(e.gateway_id.as_str())),
        ("session_id", string(e.session_id.as_str())),
        ("xml", string(&e.xml)),
        ("delayed_from", opt_timestamp(e.delayed_from)),
        (
            "copies",
            records(
                e.copies
                    .iter()
                    .map(|c| {
                        vec![
                            ("event_id", uuid(c.event_id)),
                            ("to", string(c.to.as_str())),
                            ("session_id", string(c.session_id.as_str())),
                        ]
                    })
                    .collect(),
            ),
        ),
    ])
}

fn offline_event(e: &OfflineEvent) -> Value {
    let (mut stored, mut delivered, mut expired) = (None, None, None);
    match e {
        OfflineEvent::Stored(s) => {
            stored = Some(vec![
                ("message_event_id", uuid(s.message_event_id)),
                ("recipient", string(s.recipient.as_str())),
                ("sender", string(s.sender.as_str())),
                ("stored_at", timestamp(s.stored_at)),
                ("xml", string(&s.xml)),
            ])
        }
        OfflineEvent::Delivered(d) => {
            delivered = Some(vec![
                ("message_event_id", uuid(d.message_event_id)),
                ("recipient", string(d.recipient.as_str())),
                ("at", timestamp(d.at)),
            ])
        }
        OfflineEvent::Expired(x) => {
            expired = Some(vec![
                ("message_event_id", uuid(x.message_event_id)),
                ("recipient", string(x.recipient.as_str())),
                ("at", timestamp(x.at)),
            ])
        }
    }
    record(vec![
        ("stored", opt_record(stored)),
        ("delivered", opt_record(delivered)),
        ("expired", opt_record(expired)),
    ])
}

fn scram(c: &ScramCredentials) -> Value {
    record(vec![
        ("salt", Value::Bytes(c.salt().to_vec())),
        // ScramCredentials guarantees 1..=i32::MAX.
        (
            "iterations",
            Value::Int(i32::try_from(c.iterations()).unwrap_or(i32::MAX)),
        ),
        ("stored_key", Value::Bytes(c.stored_key().to_vec())),
        ("server_key", Value::Bytes(c.server_key().to_vec())),
    ])
}

fn account_state(s: &AccountState) -> Vec<(&'static str, Value)> {
    vec![
        ("jid", string(s.jid.as_str())),
        ("scram_sha1", scram(s.credentials.sha1())),
        ("scram_sha256", scram(s.credentials.sha256())),
        ("at", timestamp(s.at)),
        ("by", string(&s.by)),
    ]
}

fn account_event(e: &AccountEvent) -> Value {
    let (mut created, mut changed, mut deleted) = (None, None, None);
    match e {
        AccountEvent::Created(s) => created = Some(account_state(s)),
        AccountEvent::Changed(s) => changed = Some(account_state(s)),
        AccountEvent::Deleted(d) => {
            deleted = Some(vec![
                ("jid", string(d.jid.as_str())),
                ("at", timestamp(d.at)),
                ("by", string(&d.by)),
            ])
        }
    }
    record(vec![
        ("created", opt_record(created)),
        ("changed", opt_record(changed)),
        ("deleted", opt_record(deleted)),
    ])
}

fn roster_changed(e: &RosterChanged) -> Value {
    record(vec![
        ("user", string(e.user.as_str())),
        ("contact", string(e.contact.as_str())),
        ("name", opt_string(e.name.as_deref())),
        (
            "groups",
            Value::Array(e.groups.iter().map(|g| string(g)).collect()),
        ),
        ("subscription", symbol(subscription_symbol(e.subscription))),
        ("ask_out", Value::Boolean(e.ask_out)),
        ("pending_in", opt_string(e.pending_in.as_deref())),
        ("approved", Value::Boolean(e.approved)),
        ("at", timestamp(e.at)),
    ])
}

fn compliance_record(e: &ComplianceRecord) -> Value {
    record(vec![
        ("event_id", uuid(e.event_id)),
        ("recipient", string(e.recipient.as_str())),
        ("sender", string(e.sender.as_str())),
        ("direction", symbol(direction_symbol(e.direction))),
        ("timestamp", timestamp(e.timestamp)),
        ("message_type", symbol(message_type_symbol(e.message_type))),
        ("thread", opt_string(e.thread.as_deref())),
        ("subject", opt_string(e.subject.as_deref())),
        ("body", opt_string(e.body.as_deref())),
        ("room", opt_string(e.room.as_ref().map(|r| r.as_str()))),
        ("nickname", opt_string(e.nickname.as_deref())),
        ("xml", string(&e.xml)),
        ("origin", symbol(origin_symbol(e.origin))),
    ])
}

fn config_changed(e: &ConfigChanged) -> Value {
    record(vec![
        ("key", string(e.key.as_str())),
        ("value", opt_string(e.value.as_deref())),
        ("at", timestamp(e.at)),
        ("by", string(&e.by)),
    ])
}

fn user_data_changed(e: &UserDataChanged) -> Value {
    record(vec![
        ("user", string(e.user.as_str())),
        ("namespace", string(&e.namespace)),
        ("xml", opt_string(e.xml.as_deref())),
        ("at", timestamp(e.at)),
    ])
}

fn archived_message(e: &ArchivedMessage) -> Value {
    record(vec![
        ("archive_id", uuid(e.archive_id)),
        ("event_id", uuid(e.event_id)),
        ("owner", string(e.owner.as_str())),
        ("with", string(e.with.as_str())),
        ("direction", symbol(direction_symbol(e.direction))),
        ("timestamp", timestamp(e.timestamp)),
        ("xml", string(&e.xml)),
    ])
}

fn opt_count(n: Option<usize>) -> Value {
    opt_long(n.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
}

fn room_state(room: &Room) -> Value {
    let c = &room.config;
    record(vec![
        ("jid", string(room.jid.as_str())),
        (
            "config",
            record(vec![
                ("name", opt_string(c.name.as_deref())),
                ("description", opt_string(c.description.as_deref())),
                ("persistent", Value::Boolean(c.persistent)),
                ("public", Value::Boolean(c.public)),
                ("members_only", Value::Boolean(c.members_only)),
                ("password", opt_string(c.password.as_deref())),
                ("moderated", Value::Boolean(c.moderated)),
                ("max_users", opt_count(c.max_users)),
                ("whois", symbol(whois_symbol(c.whois))),
                ("history_length", opt_count(c.history_length)),
                ("change_subject", Value::Boolean(c.change_subject)),
                ("allow_invites", Value::Boolean(c.allow_invites)),
            ]),
        ),
        ("locked", Value::Boolean(room.locked)),
        (
            "affiliations",
            records(
                room.affiliations
                    .iter()
                    .map(|(jid, a)| {
                        vec![
                            ("jid", string(jid.as_str())),
                            ("affiliation", symbol(affiliation_symbol(*a))),
                        ]
                    })
                    .collect(),
            ),
        ),
        (
            "occupants",
            records(
                room.occupants
                    .iter()
                    .map(|(nick, o)| {
                        vec![
                            ("nick", string(nick)),
                            ("jid", string(o.jid.as_str())),
                            ("gateway_id", string(o.gateway_id.as_str())),
                            ("session_id", string(o.session_id.as_str())),
                            ("service", string(&o.service)),
                            ("role", symbol(role_symbol(o.role))),
                            ("presence", string(&o.presence)),
                            ("joined_at", timestamp(o.joined_at)),
                        ]
                    })
                    .collect(),
            ),
        ),
        (
            "subject",
            opt_record(room.subject.as_ref().map(|s| {
                vec![
                    ("text", string(&s.text)),
                    ("nick", opt_string(s.nick.as_deref())),
                    ("at", timestamp(s.at)),
                ]
            })),
        ),
        (
            "history",
            records(
                room.history
                    .iter()
                    .map(|m| {
                        vec![
                            ("nick", string(&m.nick)),
                            ("jid", string(m.jid.as_str())),
                            ("xml", string(&m.xml)),
                            ("at", timestamp(m.at)),
                        ]
                    })
                    .collect(),
            ),
        ),
        ("created_at", timestamp(room.created_at)),
    ])
}

// ---------------------------------------------------------------------------------------
// Avro -> domain

/// The event in `value`, an Avro value of (or resolved to) the current schema of `kind`.
pub(crate) fn from_value(kind: EventSchema, value: Value) -> Result<Event, SchemaError> {
    let mut f = Fields::top(kind.name(), value)?;
    Ok(match kind {
        EventSchema::StanzaReceived => Event::StanzaReceived(read_stanza_received(&mut f)?),
        EventSchema::SessionEvent => Event::Session(read_session_event(&mut f)?),
        EventSchema::Delivery => Event::Delivery(read_delivery(&mut f)?),
        EventSchema::OfflineEvent => Event::Offline(read_offline_event(&mut f)?),
        EventSchema::AccountEvent => Event::Account(read_account_event(&mut f)?),
        EventSchema::RosterChanged => Event::RosterChanged(read_roster_changed(&mut f)?),
        EventSchema::ComplianceRecord => Event::Compliance(read_compliance_record(&mut f)?),
        EventSchema::ConfigChanged => Event::ConfigChanged(read_config_changed(&mut f)?),
        EventSchema::UserDataChanged => Event::UserData(read_user_data_changed(&mut f)?),
        EventSchema::ArchivedMessage => Event::Archived(read_archived_message(&mut f)?),
        EventSchema::RoomState => Event::RoomState(Box::new(read_room_state(&mut f)?)),
    })
}

fn read_stanza_received(f: &mut Fields) -> Result<StanzaReceived, SchemaError> {
    Ok(StanzaReceived {
        event_id: f.uuid("event_id")?,
        gateway_id: gateway_id(f, "gateway_id")?,
        session_id: session_id(f, "session_id")?,
        received_at: f.timestamp("received_at")?,
        sender: f.full_jid("sender")?,
        recipient: f.opt_jid("recipient")?,
        kind: enum_field(f, "kind", kind_from)?,
        stanza_type: f.opt_string("stanza_type")?,
        stanza_id: f.opt_string("stanza_id")?,
        xml: f.string("xml")?,
    })
}

fn read_session_state(f: &mut Fields) -> Result<SessionState, SchemaError> {
    let jid = f.split_full_jid("user", "resource")?;
    let gateway_id = gateway_id(f, "gateway_id")?;
    let session_id = session_id(f, "session_id")?;
    let at = f.timestamp("at")?;
    let mut p = f.record("presence")?;
    let priority = p.int("priority")?;
    let presence = SessionPresence {
        availability: enum_field(&mut p, "availability", availability_from)?,
        priority: i8::try_from(priority).map_err(|_| {
            p.error(
                "priority",
                FieldProblem::OutOfRange {
                    value: i64::from(priority),
                    range: "-128..=127",
                },
            )
        })?,
        status: p.opt_string("status")?,
    };
    let mut c = f.record("features")?;
    let features = ClientFeatures {
        carbons: c.boolean("carbons")?,
        roster_requested: c.boolean("roster_requested")?,
    };
    Ok(SessionState {
        jid,
        gateway_id,
        session_id,
        at,
        presence,
        features,
    })
}

fn read_session_event(f: &mut Fields) -> Result<SessionEvent, SchemaError> {
    Ok(match f.one_of(&["bound", "updated", "closed"])? {
        (0, mut b) => SessionEvent::Bound(read_session_state(&mut b)?),
        (1, mut b) => SessionEvent::Updated(read_session_state(&mut b)?),
        (_, mut b) => SessionEvent::Closed(SessionClosed {
            jid: b.split_full_jid("user", "resource")?,
            gateway_id: gateway_id(&mut b, "gateway_id")?,
            session_id: session_id(&mut b, "session_id")?,
            at: b.timestamp("at")?,
            reason: enum_field(&mut b, "reason", reason_from)?,
            detail: b.opt_string("detail")?,
        }),
    })
}

fn read_delivery(f: &mut Fields) -> Result<Delivery, SchemaError> {
    Ok(Delivery {
        event_id: f.uuid("event_id")?,
        source_event_id: f.uuid("source_event_id")?,
        to: f.full_jid("to")?,
        gateway_id: gateway_id(f, "gateway_id")?,
        session_id: session_id(f, "session_id")?,
        xml: f.string("xml")?,
        delayed_from: f.opt_timestamp("delayed_from")?,
        copies: f
            .records("copies")?
            .into_iter()
            .map(|mut c| {
                Ok(DeliveryCopy {
                    event_id: c.uuid("event_id")?,
                    to: c.full_jid("to")?,
                    session_id: session_id(&mut c, "session_id")?,
                })
            })
            .collect::<Result<_, SchemaError>>()?,
    })
}

fn read_offline_event(f: &mut Fields) -> Result<OfflineEvent, SchemaError> {
    Ok(match f.one_of(&["stored", "delivered", "expired"])? {
        (0, mut b) => OfflineEvent::Stored(OfflineStored {
            message_event_id: b.uuid("message_event_id")?,
            recipient: b.bare_jid("recipient")?,
            sender: b.jid("sender")?,
            stored_at: b.timestamp("stored_at")?,
            xml: b.string("xml")?,
        }),
        (1, mut b) => OfflineEvent::Delivered(OfflineDelivered {
            message_event_id: b.uuid("message_event_id")?,
            recipient: b.bare_jid("recipient")?,
            at: b.timestamp("at")?,
        }),
        (_, mut b) => OfflineEvent::Expired(OfflineExpired {
            message_event_id: b.uuid("message_event_id")?,
            recipient: b.bare_jid("recipient")?,
            at: b.timestamp("at")?,
        }),
    })
}

fn read_scram(
    f: &mut Fields,
    field: &str,
    hash: ScramHash,
) -> Result<ScramCredentials, SchemaError> {
    let mut c = f.record(field)?;
    let salt = c.bytes("salt")?;
    let iterations = c.int("iterations")?;
    let iterations = u32::try_from(iterations).map_err(|_| {
        c.error(
            "iterations",
            FieldProblem::OutOfRange {
                value: i64::from(iterations),
                range: "1..=2147483647",
            },
        )
    })?;
    let stored_key = c.bytes("stored_key")?;
    let server_key = c.bytes("server_key")?;
    ScramCredentials::new(hash, salt, iterations, stored_key, server_key)
        .map_err(|e| f.error(field, FieldProblem::Invalid(e)))
}

fn read_account_state(f: &mut Fields) -> Result<AccountState, SchemaError> {
    let jid = f.bare_jid("jid")?;
    let sha1 = read_scram(f, "scram_sha1", ScramHash::Sha1)?;
    let sha256 = read_scram(f, "scram_sha256", ScramHash::Sha256)?;
    let credentials = Credentials::new(sha1, sha256)
        .map_err(|e| f.error("scram_sha1", FieldProblem::Invalid(e)))?;
    Ok(AccountState {
        jid,
        credentials,
        at: f.timestamp("at")?,
        by: f.string("by")?,
    })
}

fn read_account_event(f: &mut Fields) -> Result<AccountEvent, SchemaError> {
    Ok(match f.one_of(&["created", "changed", "deleted"])? {
        (0, mut b) => AccountEvent::Created(read_account_state(&mut b)?),
        (1, mut b) => AccountEvent::Changed(read_account_state(&mut b)?),
        (_, mut b) => AccountEvent::Deleted(AccountDeleted {
            jid: b.bare_jid("jid")?,
            at: b.timestamp("at")?,
            by: b.string("by")?,
        }),
    })
}

fn read_roster_changed(f: &mut Fields) -> Result<RosterChanged, SchemaError> {
    Ok(RosterChanged {
        user: f.bare_jid("user")?,
        contact: f.bare_jid("contact")?,
        name: f.opt_string("name")?,
        groups: f.strings("groups")?,
        subscription: enum_field(f, "subscription", subscription_from)?,
        ask_out: f.boolean("ask_out")?,
        pending_in: f.opt_string("pending_in")?,
        approved: f.boolean("approved")?,
        at: f.timestamp("at")?,
    })
}

fn read_compliance_record(f: &mut Fields) -> Result<ComplianceRecord, SchemaError> {
    Ok(ComplianceRecord {
        event_id: f.uuid("event_id")?,
        recipient: f.bare_jid("recipient")?,
        sender: f.jid("sender")?,
        direction: enum_field(f, "direction", direction_from)?,
        timestamp: f.timestamp("timestamp")?,
        message_type: enum_field(f, "message_type", message_type_from)?,
        thread: f.opt_string("thread")?,
        subject: f.opt_string("subject")?,
        body: f.opt_string("body")?,
        room: f.opt_bare_jid("room")?,
        nickname: f.opt_string("nickname")?,
        xml: f.string("xml")?,
        origin: enum_field(f, "origin", origin_from)?,
    })
}

fn read_config_changed(f: &mut Fields) -> Result<ConfigChanged, SchemaError> {
    let key = f.string("key")?;
    Ok(ConfigChanged {
        key: ConfigKey::new(key).map_err(|e| f.error("key", FieldProblem::Invalid(e)))?,
        value: f.opt_string("value")?,
        at: f.timestamp("at")?,
        by: f.string("by")?,
    })
}

fn read_user_data_changed(f: &mut Fields) -> Result<UserDataChanged, SchemaError> {
    Ok(UserDataChanged {
        user: f.bare_jid("user")?,
        namespace: f.string("namespace")?,
        xml: f.opt_string("xml")?,
        at: f.timestamp("at")?,
    })
}

fn read_archived_message(f: &mut Fields) -> Result<ArchivedMessage, SchemaError> {
    Ok(ArchivedMessage {
        archive_id: f.uuid("archive_id")?,
        event_id: f.uuid("event_id")?,
        owner: f.bare_jid("owner")?,
        with: f.jid("with")?,
        direction: enum_field(f, "direction", direction_from)?,
        timestamp: f.timestamp("timestamp")?,
        xml: f.string("xml")?,
    })
}

fn read_count(f: &mut Fields, field: &str) -> Result<Option<usize>, SchemaError> {
    match f.opt_long(field)? {
        None => Ok(None),
        Some(n) => usize::try_from(n).map(Some).map_err(|_| {
            f.error(
                field,
                FieldProblem::OutOfRange {
                    value: n,
                    range: "0..",
                },
            )
        }),
    }
}

fn read_room_state(f: &mut Fields) -> Result<Room, SchemaError> {
    let jid = f.bare_jid("jid")?;
    let mut c = f.record("config")?;
    let config = RoomConfig {
        name: c.opt_string("name")?,
        description: c.opt_string("description")?,
        persistent: c.boolean("persistent")?,
        public: c.boolean("public")?,
        members_only: c.boolean("members_only")?,
        password: c.opt_string("password")?,
        moderated: c.boolean("moderated")?,
        max_users: read_count(&mut c, "max_users")?,
        whois: enum_field(&mut c, "whois", whois_from)?,
        history_length: read_count(&mut c, "history_length")?,
        change_subject: c.boolean("change_subject")?,
        allow_invites: c.boolean("allow_invites")?,
    };
    let mut room = Room::new(jid, config, f.timestamp("created_at")?);
    room.locked = f.boolean("locked")?;
    for mut a in f.records("affiliations")? {
        let jid = a.bare_jid("jid")?;
        let affiliation = enum_field(&mut a, "affiliation", affiliation_from)?;
        room.affiliations.insert(jid, affiliation);
    }
    for mut o in f.records("occupants")? {
        let nick = o.string("nick")?;
        let occupant = Occupant {
            jid: o.full_jid("jid")?,
            gateway_id: gateway_id(&mut o, "gateway_id")?,
            session_id: session_id(&mut o, "session_id")?,
            service: o.string("service")?,
            role: enum_field(&mut o, "role", role_from)?,
            presence: o.string("presence")?,
            joined_at: o.timestamp("joined_at")?,
        };
        room.occupants.insert(nick, occupant);
    }
    room.subject = match f.opt_record("subject")? {
        None => None,
        Some(mut s) => Some(Subject {
            text: s.string("text")?,
            nick: s.opt_string("nick")?,
            at: s.timestamp("at")?,
        }),
    };
    for mut m in f.records("history")? {
        room.history.push(HistoryMessage {
            nick: m.string("nick")?,
            jid: m.full_jid("jid")?,
            xml: m.string("xml")?,
            at: m.timestamp("at")?,
        });
    }
    Ok(room)
}

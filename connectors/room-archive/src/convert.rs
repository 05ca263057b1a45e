//! Pure translations: log records into database changes, archive queries into
//! [`Search`]es, and pages of results into the deliveries that answer the query.

use std::collections::HashMap;

use imbus_archive::{
    DEFAULT_PAGE, MAX_PAGE, Query, answer_delivery, error_delivery, fin_element, parse_query,
    result_delivery,
};
use imbus_core::{
    Affiliation, ArchivedMessage, BareJid, Delivery, Jid, Room, StanzaReceived, Timestamp, Uuid,
};
use imbus_xmpp_stream::{
    Element, StanzaError, StanzaErrorCondition, StanzaErrorType, ns, parse_stanza,
};
use time::OffsetDateTime;

use crate::model::{Found, MessageRow, PageRequest, RoomChange, RoomRow, Search};

/// A timestamp as a date and time (UTC); out-of-range values are clamped to the epoch.
pub fn datetime(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_micros()) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A date and time as a timestamp.
pub fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_micros(i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(0))
}

fn affiliation_name(a: Affiliation) -> &'static str {
    match a {
        Affiliation::Owner => "owner",
        Affiliation::Admin => "admin",
        Affiliation::Member => "member",
        Affiliation::Outcast => "outcast",
        Affiliation::None => "none",
    }
}

/// The `TC_ROOMS`/`TC_USERS` row of a room's state.
pub fn room_row(room: &Room, at: Timestamp) -> RoomRow {
    let c = &room.config;
    RoomRow {
        room_jid: room.jid.as_str().to_owned(),
        name: c.name.clone(),
        description: c.description.clone(),
        subject: room.subject.as_ref().map(|s| s.text.clone()),
        public: c.public,
        members_only: c.members_only,
        moderated: c.moderated,
        password_protected: c.password.is_some(),
        max_users: c.max_users.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        history_length: c
            .history_length
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        created_at: datetime(room.created_at),
        updated_at: datetime(at),
        affiliations: room
            .affiliations
            .iter()
            .filter(|(_, a)| **a != Affiliation::None)
            .map(|(jid, a)| (jid.as_str().to_owned(), affiliation_name(*a).to_owned()))
            .collect(),
    }
}

/// What the room tables last received per room, so that a room state that changes
/// nothing they hold (a message added to the room's history, an occupant entering) is
/// not written again.
#[derive(Debug, Default)]
pub struct RoomTables {
    /// Per room: the row last written (with `updated_at` cleared), or `None` when the
    /// room is known not to be in the tables (temporary or gone).
    last: HashMap<String, Option<RoomRow>>,
}

impl RoomTables {
    /// The change a record of the `rooms` changelog makes to the tables, if any:
    /// `room` is the decoded state (`None` for a tombstone), `key` the record's key and
    /// `at` its time.
    pub fn change(&mut self, key: &str, room: Option<&Room>, at: Timestamp) -> Option<RoomChange> {
        match room.filter(|r| r.config.persistent) {
            Some(room) => {
                let row = room_row(room, at);
                let mut seen = row.clone();
                seen.updated_at = OffsetDateTime::UNIX_EPOCH;
                let jid = row.room_jid.clone();
                if self.last.get(&jid) == Some(&Some(seen.clone())) {
                    return None;
                }
                self.last.insert(jid, Some(seen));
                Some(RoomChange::Stored(row))
            }
            None => {
                let jid = room.map_or(key, |r| r.jid.as_str()).to_owned();
                if self.last.get(&jid) == Some(&None) {
                    return None;
                }
                self.last.insert(jid.clone(), None);
                Some(RoomChange::Gone {
                    room_jid: jid,
                    at: datetime(at),
                })
            }
        }
    }

    /// Forgets what was written (after a failed transaction, whose rows may be missing).
    pub fn forget(&mut self) {
        self.last.clear();
    }
}

/// Why an archived message cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The stored XML does not parse.
    #[error("the archived message is not a well-formed stanza")]
    Unparsable,
    /// The message does not come from an occupant address (`room@service/nick`).
    #[error("the archived message has no occupant address as its sender")]
    NoNickname,
}

/// The `TC_MSGARCHIVE` row of a room message, at `offset` of its `rooms.archive`
/// partition.
pub fn message_row(message: &ArchivedMessage, offset: i64) -> Result<MessageRow, MessageError> {
    let element = parse_stanza(&message.xml).ok_or(MessageError::Unparsable)?;
    let nickname = element
        .attr("from")
        .and_then(|f| Jid::new(f).ok())
        .and_then(|j| j.resource().map(|r| r.as_str().to_owned()))
        .ok_or(MessageError::NoNickname)?;
    let text = |name: &str| element.child(name, ns::JABBER_CLIENT).map(Element::text);
    Ok(MessageRow {
        archive_id: message.archive_id,
        room_jid: message.owner.as_str().to_owned(),
        seq: offset,
        from_jid: message.with.as_str().to_owned(),
        nickname,
        sent_date: datetime(message.timestamp),
        subject: text("subject"),
        body: text("body"),
        xml: message.xml.clone(),
    })
}

/// A query the database can answer, or the answer already decided.
#[derive(Debug)]
pub enum Prepared {
    /// Run this search, then [`answer`].
    Search(Box<PreparedSearch>),
    /// Write these deliveries (the form, or an error).
    Reply(Vec<Delivery>),
}

/// An archive query ready to run.
#[derive(Debug)]
pub struct PreparedSearch {
    /// What to ask the database.
    pub search: Search,
    /// Present the page in reverse order (`<flip-page/>`).
    pub flip: bool,
    query: StanzaReceived,
    request: Element,
    query_id: Option<String>,
}

fn bad_request(text: impl Into<String>) -> StanzaError {
    StanzaError::new(StanzaErrorCondition::BadRequest)
        .with_type(StanzaErrorType::Modify)
        .with_text(text)
}

fn parse_id(id: &str) -> Result<Uuid, StanzaError> {
    Uuid::parse_str(id).map_err(|_| {
        StanzaError::new(StanzaErrorCondition::ItemNotFound)
            .with_type(StanzaErrorType::Cancel)
            .with_text(format!("no message with id {id} in this room's archive"))
    })
}

/// The filters of a parsed query against the archive of `room`.
pub fn search_of(room: &BareJid, q: &Query) -> Result<Search, StanzaError> {
    let nickname = match &q.with {
        None => None,
        Some(with) if with.to_bare() == *room => {
            with.resource().map(|nick| nick.as_str().to_owned())
        }
        Some(with) => {
            return Err(bad_request(format!(
                "with: in a room's archive, give an occupant address ({room}/nickname), not {with}"
            )));
        }
    };
    let millis = |m: i64| datetime(Timestamp::from_micros(m.saturating_mul(1000)));
    let page = match (&q.after, &q.before) {
        (Some(after), _) => PageRequest::After(parse_id(after)?),
        (None, Some(before)) if before.is_empty() => PageRequest::Last,
        (None, Some(before)) => PageRequest::Before(parse_id(before)?),
        (None, None) => PageRequest::Index(q.index.unwrap_or(0)),
    };
    Ok(Search {
        room_jid: room.as_str().to_owned(),
        nickname,
        start: q.start.map(millis),
        end: q.end.map(millis),
        fulltext: q
            .fulltext
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        after_id: q.after_id.as_deref().map(parse_id).transpose()?,
        before_id: q.before_id.as_deref().map(parse_id).transpose()?,
        ids: q
            .ids
            .as_ref()
            .map(|ids| ids.iter().map(|id| parse_id(id)).collect())
            .transpose()?,
        page,
        max: q.max.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE),
    })
}

/// Decides how to answer an archive query to a room (an IQ the rooms processor
/// accepted: the sender may read the room's archive).
pub fn prepare(query: StanzaReceived) -> Prepared {
    let Some(request) = parse_stanza(&query.xml) else {
        tracing::warn!(event = %query.event_id, "unparsable room archive query on the log; skipped");
        return Prepared::Reply(Vec::new());
    };
    let refuse = |e: StanzaError| -> Prepared {
        Prepared::Reply(error_delivery(&query, &request, &e).into_iter().collect())
    };
    let Some(room) = query.recipient.as_ref().map(Jid::to_bare) else {
        return refuse(bad_request("the query has no room as its recipient"));
    };
    let payload = request.children().next();
    let parsed = match payload.map(parse_query) {
        Some(Ok(q)) => q,
        Some(Err(e)) => return refuse(e),
        None => Query::default(),
    };
    let search = match search_of(&room, &parsed) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    Prepared::Search(Box::new(PreparedSearch {
        search,
        flip: parsed.flip,
        query_id: parsed.query_id,
        query,
        request,
    }))
}

impl PreparedSearch {
    /// The query this search answers.
    pub fn query(&self) -> &StanzaReceived {
        &self.query
    }

    /// The answer: one result message per message found (in page order) and the IQ
    /// result with `<fin/>`.
    pub fn answer(self, found: Found) -> Vec<Delivery> {
        let room = self.search.room_jid.clone();
        let ends = found
            .messages
            .first()
            .zip(found.messages.last())
            .map(|(f, l)| (f.archive_id, l.archive_id));
        let fin = fin_element(found.complete, found.first_index, found.count, ends);
        let mut messages = found.messages;
        if self.flip {
            messages.reverse();
        }
        let mut out = Vec::with_capacity(messages.len() + 1);
        let mut n = 0u32;
        for m in messages {
            let Some(original) = parse_stanza(&m.xml) else {
                tracing::warn!(id = %m.archive_id, room, "an archived room message does not parse; left out of the result");
                continue;
            };
            n += 1;
            out.push(result_delivery(
                &self.query,
                &room,
                self.query_id.as_deref(),
                n,
                &m.archive_id,
                timestamp(m.sent_date),
                original,
            ));
        }
        out.push(answer_delivery(&self.query, &self.request, Some(fin)));
        out
    }

    /// The answer when the search failed: `item-not-found` for an id the archive does
    /// not hold, otherwise a `wait` error saying the archive is unavailable.
    pub fn failed(self, unknown_id: Option<Uuid>) -> Vec<Delivery> {
        let error = match unknown_id {
            Some(id) => StanzaError::new(StanzaErrorCondition::ItemNotFound)
                .with_type(StanzaErrorType::Cancel)
                .with_text(format!("no message with id {id} in this room's archive")),
            None => StanzaError::new(StanzaErrorCondition::InternalServerError)
                .with_type(StanzaErrorType::Wait)
                .with_text("The room archive is unavailable right now; try again later"),
        };
        error_delivery(&self.query, &self.request, &error)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imbus_core::{Direction, FullJid, GatewayId, RoomConfig, SessionId, StanzaKind};

    const ROOM: &str = "team@conference.example.com";

    fn query(xml: &str) -> StanzaReceived {
        StanzaReceived {
            event_id: Uuid::from_u128(7),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: SessionId::new("s1").unwrap(),
            received_at: Timestamp::from_micros(1_700_000_000_000_000),
            sender: FullJid::new("alice@example.com/phone").unwrap(),
            recipient: Some(Jid::new(ROOM).unwrap()),
            kind: StanzaKind::Iq,
            stanza_type: Some("set".into()),
            stanza_id: Some("q1".into()),
            xml: xml.to_owned(),
        }
    }

    fn prepared(xml: &str) -> PreparedSearch {
        match prepare(query(xml)) {
            Prepared::Search(s) => *s,
            Prepared::Reply(r) => panic!("expected a search, got {r:?}"),
        }
    }

    fn refused(xml: &str) -> String {
        match prepare(query(xml)) {
            Prepared::Reply(r) => r[0].xml.clone(),
            Prepared::Search(s) => panic!("expected a refusal, got {:?}", s.search),
        }
    }

    #[test]
    fn a_query_becomes_a_search_with_full_text_nickname_and_paging() {
        let p = prepared(&format!(
            "<iq xmlns='jabber:client' type='set' id='q1' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='f'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>{ROOM}/Bob</value></field>\
             <field var='start'><value>2026-12-05T00:00:00Z</value></field>\
             <field var='{{urn:xmpp:fulltext:0}}fulltext'><value>  release plan </value></field>\
             </x><set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set></query></iq>"
        ));
        let s = &p.search;
        assert_eq!(s.room_jid, ROOM);
        assert_eq!(s.nickname.as_deref(), Some("Bob"));
        assert_eq!(s.fulltext.as_deref(), Some("release plan"));
        assert_eq!(
            s.start.map(|t| t.unix_timestamp()),
            Some(1_796_428_800),
            "2026-12-05T00:00:00Z"
        );
        assert_eq!(s.page, PageRequest::Last);
        assert_eq!(s.max, MAX_PAGE, "max is capped");
    }

    #[test]
    fn bad_queries_are_refused_with_the_reason() {
        let with_user = refused(&format!(
            "<iq xmlns='jabber:client' type='set' id='q1' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'>\
             <x xmlns='jabber:x:data' type='submit'><field var='with'><value>bob@example.com</value></field></x></query></iq>"
        ));
        assert!(
            with_user.contains("bad-request") && with_user.contains("bob@example.com"),
            "{with_user}"
        );
        let bad_after = refused(&format!(
            "<iq xmlns='jabber:client' type='set' id='q1' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'>\
             <set xmlns='http://jabber.org/protocol/rsm'><after>nope</after></set></query></iq>"
        ));
        assert!(
            bad_after.contains("item-not-found") && bad_after.contains("nope"),
            "{bad_after}"
        );
        let bad_date = refused(&format!(
            "<iq xmlns='jabber:client' type='set' id='q1' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'>\
             <x xmlns='jabber:x:data' type='submit'><field var='start'><value>yesterday</value></field></x></query></iq>"
        ));
        assert!(
            bad_date.contains("bad-request") && bad_date.contains("yesterday"),
            "{bad_date}"
        );
    }

    #[test]
    fn answers_forward_each_message_from_the_room_then_fin() {
        let p = prepared(&format!(
            "<iq xmlns='jabber:client' type='set' id='q1' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='f'/></iq>"
        ));
        let row = |n: u128| MessageRow {
            archive_id: Uuid::from_u128(n),
            room_jid: ROOM.into(),
            seq: n as i64,
            from_jid: "bob@example.com/desk".into(),
            nickname: "Bob".into(),
            sent_date: datetime(Timestamp::from_micros(1_700_000_000_000_000)),
            subject: None,
            body: Some(format!("m{n}")),
            xml: format!(
                "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/Bob'><body>m{n}</body></message>"
            ),
        };
        let out = p.answer(Found {
            messages: vec![row(1), row(2)],
            first_index: 4,
            count: 9,
            complete: false,
        });
        assert_eq!(out.len(), 3);
        assert!(
            out[0].xml.contains(&format!("from='{ROOM}'"))
                && out[0].xml.contains("queryid='f'")
                && out[0].xml.contains("<body>m1</body>"),
            "{}",
            out[0].xml
        );
        assert!(
            !out[0].xml.contains("bob@example.com"),
            "real JIDs stay out of results: {}",
            out[0].xml
        );
        let fin = &out[2].xml;
        assert!(
            fin.contains("<first index='4'>00000000-0000-0000-0000-000000000001</first>"),
            "{fin}"
        );
        assert!(
            fin.contains("<count>9</count>") && !fin.contains("complete"),
            "{fin}"
        );
    }

    #[test]
    fn room_tables_get_persistent_rooms_once_per_real_change() {
        let jid = BareJid::new(ROOM).unwrap();
        let mut room = Room::new(
            jid.clone(),
            RoomConfig {
                persistent: true,
                ..RoomConfig::default()
            },
            Timestamp::from_micros(1),
        );
        room.affiliations.insert(
            BareJid::new("alice@example.com").unwrap(),
            Affiliation::Owner,
        );
        let mut tables = RoomTables::default();
        let first = tables.change(ROOM, Some(&room), Timestamp::from_micros(2));
        assert!(
            matches!(&first, Some(RoomChange::Stored(r)) if r.affiliations == vec![("alice@example.com".to_owned(), "owner".to_owned())])
        );
        // A new history entry changes nothing in the tables.
        room.history.push(imbus_core::HistoryMessage {
            nick: "Alice".into(),
            jid: FullJid::new("alice@example.com/phone").unwrap(),
            xml: "<message/>".into(),
            at: Timestamp::from_micros(3),
        });
        assert_eq!(
            tables.change(ROOM, Some(&room), Timestamp::from_micros(3)),
            None
        );
        room.config.name = Some("Team".into());
        assert!(
            tables
                .change(ROOM, Some(&room), Timestamp::from_micros(4))
                .is_some()
        );
        // Destroyed: gone once.
        assert!(matches!(
            tables.change(ROOM, None, Timestamp::from_micros(5)),
            Some(RoomChange::Gone { .. })
        ));
        assert_eq!(tables.change(ROOM, None, Timestamp::from_micros(6)), None);
        // A temporary room is never stored.
        room.config.persistent = false;
        assert_eq!(
            tables.change(ROOM, Some(&room), Timestamp::from_micros(7)),
            None
        );
    }

    #[test]
    fn message_rows_take_the_nickname_from_the_room_address() {
        let m = ArchivedMessage {
            archive_id: Uuid::from_u128(1),
            event_id: Uuid::from_u128(2),
            owner: BareJid::new(ROOM).unwrap(),
            with: Jid::new("bob@example.com/desk").unwrap(),
            direction: Direction::Inbound,
            timestamp: Timestamp::from_micros(1_700_000_000_000_000),
            xml: format!(
                "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/Bob the Builder'><subject>s</subject><body>hi 👋</body></message>"
            ),
        };
        let row = message_row(&m, 42).unwrap();
        assert_eq!(row.nickname, "Bob the Builder");
        assert_eq!(row.from_jid, "bob@example.com/desk");
        assert_eq!(row.seq, 42);
        assert_eq!(row.body.as_deref(), Some("hi 👋"));
        assert_eq!(row.subject.as_deref(), Some("s"));
        assert_eq!(timestamp(row.sent_date), m.timestamp);
        let mut bad = m.clone();
        bad.xml = "<message from='team@conference.example.com'/>".into();
        assert_eq!(message_row(&bad, 1), Err(MessageError::NoNickname));
    }
}

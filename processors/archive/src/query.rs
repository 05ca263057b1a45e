//! XEP-0313 queries evaluated against the index: the query form (`with`, `start`, `end`,
//! and from `urn:xmpp:mam:2#extended` `after-id`, `before-id`, `ids`), XEP-0059 result
//! set paging (`max`, `after`, `before`, `index`), `flip-page`, the form itself, the
//! archive metadata and the (fixed) archiving preferences. No IO: a query that returns
//! messages yields the offsets to read, and [`Answer::finish`] turns what was read into
//! the result messages and the closing `<fin/>`.

use std::collections::{HashMap, HashSet};

use imbus_core::{
    ArchivedMessage, BareJid, Delivery, FullJid, Jid, StanzaReceived, Timestamp, ToBare, Uuid,
};
use imbus_log::Offset;
use imbus_xmpp_stream::{
    Element, StanzaError, StanzaErrorCondition, StanzaErrorType, error_reply, ns, parse_stanza,
};

use crate::index::{Entry, Index, UserArchive};

/// XEP-0313 Message Archive Management.
pub const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_DATA: &str = "jabber:x:data";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_DELAY: &str = "urn:xmpp:delay";

/// Page size when the client gives no `max`.
pub const DEFAULT_PAGE: usize = 50;
/// The largest page the archive returns, whatever `max` asks for.
pub const MAX_PAGE: usize = 250;

/// What to do with a query.
#[derive(Debug)]
pub enum Plan {
    /// Write these deliveries (an error, the form, metadata, preferences, or an empty
    /// result).
    Reply(Vec<Delivery>),
    /// Read the records at [`Answer::offsets`] from the owner's `archive` partition, then
    /// [`Answer::finish`].
    Fetch(Box<Answer>),
}

/// A query whose messages are to be read from the log.
#[derive(Debug)]
pub struct Answer {
    query: StanzaReceived,
    request: Element,
    query_id: Option<String>,
    items: Vec<Entry>,
    fin: Element,
}

impl Answer {
    /// The offsets of the records to read, in page order.
    pub fn offsets(&self) -> Vec<Offset> {
        self.items.iter().map(|e| e.offset).collect()
    }

    /// The result messages (one per item found in `read`, in page order) and the IQ
    /// result with `<fin/>`.
    pub fn finish(self, read: &HashMap<Offset, ArchivedMessage>) -> Vec<Delivery> {
        let owner = self.query.sender.bare();
        let mut out = Vec::with_capacity(self.items.len() + 1);
        let mut n = 0u32;
        for item in &self.items {
            let Some(message) = read.get(&item.offset).filter(|m| m.archive_id == item.id) else {
                tracing::warn!(offset = item.offset, id = %item.id, "an archived message is no longer on the log; left out of the result");
                continue;
            };
            let Some(original) = parse_stanza(&message.xml) else {
                tracing::warn!(
                    offset = item.offset,
                    "an archived message does not parse; left out of the result"
                );
                continue;
            };
            n += 1;
            out.push(result_delivery(
                &self.query,
                owner.as_str(),
                self.query_id.as_deref(),
                n,
                &item.id,
                message.timestamp,
                original,
            ));
        }
        out.push(answer_delivery(&self.query, &self.request, Some(self.fin)));
        out
    }
}

/// The `n`th result message (from 1) of the query `query`: the archived message
/// `original` (archive id `id`, archived at `stamp`) forwarded from the archive
/// `archive` (the owner's bare JID, or a room's).
pub fn result_delivery(
    query: &StanzaReceived,
    archive: &str,
    query_id: Option<&str>,
    n: u32,
    id: &Uuid,
    stamp: Timestamp,
    original: Element,
) -> Delivery {
    let message_id = Uuid::new_v5(&query.event_id, &n.to_be_bytes());
    let mut result = Element::new("result", NS_MAM).with_attr("id", id.hyphenated().to_string());
    if let Some(q) = query_id {
        result.set_attr("queryid", q);
    }
    result.push_child(
        Element::new("forwarded", NS_FORWARD)
            .with_child(Element::new("delay", NS_DELAY).with_attr("stamp", stamp.to_rfc3339()))
            .with_child(original),
    );
    let wrapper = Element::new("message", ns::JABBER_CLIENT)
        .with_attr("from", archive)
        .with_attr("to", query.sender.as_str())
        .with_attr("id", message_id.simple().to_string())
        .with_child(result);
    delivery(query, n, wrapper.to_xml())
}

/// The IQ result answering `request` (the query `query` carried), with `payload`.
pub fn answer_delivery(
    query: &StanzaReceived,
    request: &Element,
    payload: Option<Element>,
) -> Delivery {
    let mut result = iq_result(request, &query.sender);
    if let Some(p) = payload {
        result.push_child(p);
    }
    delivery(query, 0, result.to_xml())
}

/// The IQ error answering `request` (the query `query` carried); `None` when `request`
/// must not be answered with an error (it is itself an error or a result).
pub fn error_delivery(
    query: &StanzaReceived,
    request: &Element,
    error: &StanzaError,
) -> Option<Delivery> {
    let mut reply = error_reply(request, error)?;
    reply.set_attr("to", query.sender.as_str());
    Some(delivery(query, 0, reply.to_xml()))
}

fn delivery(query: &StanzaReceived, n: u32, xml: String) -> Delivery {
    let mut name = b"mam-answer".to_vec();
    name.extend_from_slice(&n.to_be_bytes());
    Delivery {
        event_id: Uuid::new_v5(&query.event_id, &name),
        source_event_id: query.event_id,
        to: query.sender.clone(),
        gateway_id: query.gateway_id.clone(),
        session_id: query.session_id.clone(),
        xml,
        delayed_from: None,
        copies: Vec::new(),
    }
}

fn iq_result(request: &Element, to: &FullJid) -> Element {
    let mut result = Element::new("iq", ns::JABBER_CLIENT)
        .with_attr("type", "result")
        .with_attr("to", to.as_str());
    if let Some(id) = request.attr("id") {
        result.set_attr("id", id);
    }
    result
}

fn bad_request(text: impl Into<String>) -> StanzaError {
    StanzaError::new(StanzaErrorCondition::BadRequest)
        .with_type(StanzaErrorType::Modify)
        .with_text(text)
}

fn item_not_found(id: &str) -> StanzaError {
    StanzaError::new(StanzaErrorCondition::ItemNotFound)
        .with_type(StanzaErrorType::Cancel)
        .with_text(format!("no message with id {id} in the archive"))
}

/// A parsed archive query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pub query_id: Option<String>,
    pub with: Option<Jid>,
    /// Inclusive bounds, in milliseconds since the epoch.
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub after_id: Option<String>,
    pub before_id: Option<String>,
    pub ids: Option<Vec<String>>,
    pub max: Option<usize>,
    pub after: Option<String>,
    /// `Some("")`: the last page.
    pub before: Option<String>,
    pub index: Option<usize>,
    pub flip: bool,
    /// XEP-0431 full-text search (`{urn:xmpp:fulltext:0}fulltext`): only messages whose
    /// body contains these words. Room archives support it.
    pub fulltext: Option<String>,
}

/// The form field of XEP-0431 full-text search.
pub const FULLTEXT_FIELD: &str = "{urn:xmpp:fulltext:0}fulltext";
/// XEP-0431's namespace (a disco feature of archives that support it).
pub const NS_FULLTEXT: &str = "urn:xmpp:fulltext:0";

/// Parses `<query xmlns='urn:xmpp:mam:2'>`.
pub fn parse_query(query: &Element) -> Result<Query, StanzaError> {
    let mut q = Query {
        query_id: query.attr("queryid").map(str::to_owned),
        flip: query.child("flip-page", NS_MAM).is_some(),
        ..Query::default()
    };
    if let Some(form) = query.child("x", NS_DATA) {
        if let Some(t) = form.attr("type")
            && t != "submit"
        {
            return Err(bad_request(format!(
                "the query form must be of type submit, not {t}"
            )));
        }
        for field in form.children().filter(|c| c.name() == "field") {
            let var = field.attr("var").unwrap_or("");
            let values: Vec<String> = field
                .children()
                .filter(|v| v.name() == "value")
                .map(Element::text)
                .collect();
            let single = || -> Result<Option<String>, StanzaError> {
                match values.as_slice() {
                    [] => Ok(None),
                    [v] if v.trim().is_empty() => Ok(None),
                    [v] => Ok(Some(v.trim().to_owned())),
                    _ => Err(bad_request(format!("field {var} takes one value"))),
                }
            };
            match var {
                "FORM_TYPE" => {
                    if single()?.as_deref() != Some(NS_MAM) {
                        return Err(bad_request(format!("FORM_TYPE must be {NS_MAM}")));
                    }
                }
                "with" => {
                    if let Some(v) = single()? {
                        q.with = Some(
                            Jid::new(&v)
                                .map_err(|_| bad_request(format!("with: not a JID: {v}")))?,
                        );
                    }
                }
                "start" | "end" => {
                    if let Some(v) = single()? {
                        let t = parse_datetime(&v).ok_or_else(|| {
                            bad_request(format!(
                                "{var}: not a XEP-0082 date and time (e.g. 2026-12-03T07:00:00Z): {v}"
                            ))
                        })?;
                        if var == "start" {
                            q.start = Some(t.as_millis());
                        } else {
                            q.end = Some(t.as_millis());
                        }
                    }
                }
                FULLTEXT_FIELD => q.fulltext = single()?,
                "after-id" => q.after_id = single()?,
                "before-id" => q.before_id = single()?,
                "ids" => {
                    q.ids = Some(
                        values
                            .iter()
                            .map(|v| v.trim().to_owned())
                            .filter(|v| !v.is_empty())
                            .collect(),
                    )
                }
                other => {
                    return Err(bad_request(format!(
                        "unknown field {other:?}; archives support with, start, end, after-id, before-id, ids and (room archives) {FULLTEXT_FIELD}"
                    )));
                }
            }
        }
    }
    if let Some(set) = query.child("set", NS_RSM) {
        for c in set.children() {
            match c.name() {
                "max" => {
                    let text = c.text();
                    q.max = Some(text.trim().parse::<usize>().map_err(|_| {
                        bad_request(format!("max: not a non-negative number: {text}"))
                    })?);
                }
                "after" => q.after = Some(c.text().trim().to_owned()),
                "before" => q.before = Some(c.text().trim().to_owned()),
                "index" => {
                    let text = c.text();
                    q.index = Some(text.trim().parse::<usize>().map_err(|_| {
                        bad_request(format!("index: not a non-negative number: {text}"))
                    })?);
                }
                _ => {}
            }
        }
        if q.after.as_deref() == Some("") {
            return Err(bad_request("after needs an id"));
        }
    }
    Ok(q)
}

/// The page a query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The selected messages, in the order they are sent.
    pub items: Vec<Entry>,
    /// Position of the first item (in archive order) in the whole result set.
    pub first_index: usize,
    /// Messages matching the filters.
    pub count: usize,
    /// The page reaches the end of the result set in the paging direction.
    pub complete: bool,
}

/// Selects the page `q` asks for in `user`'s archive (`None`: an empty archive).
pub fn evaluate(user: Option<&UserArchive>, q: &Query) -> Result<Page, StanzaError> {
    let empty = UserArchive::default();
    let user = user.unwrap_or(&empty);
    if q.fulltext.is_some() {
        return Err(StanzaError::new(StanzaErrorCondition::FeatureNotImplemented)
            .with_type(StanzaErrorType::Cancel)
            .with_text(format!(
                "{FULLTEXT_FIELD}: full-text search is offered by room archives, not by the personal archive"
            )));
    }
    let entries = user.entries();
    let known = |id: &str| -> Result<usize, StanzaError> {
        Uuid::parse_str(id)
            .ok()
            .and_then(|u| user.position(&u))
            .ok_or_else(|| item_not_found(id))
    };
    let mut lo = 0;
    let mut hi = entries.len();
    if let Some(id) = &q.after_id {
        lo = lo.max(known(id)? + 1);
    }
    if let Some(id) = &q.before_id {
        hi = hi.min(known(id)?);
    }
    let wanted: Option<HashSet<usize>> = match &q.ids {
        Some(ids) => Some(ids.iter().map(|id| known(id)).collect::<Result<_, _>>()?),
        None => None,
    };
    let with = match &q.with {
        None => None,
        Some(jid) => match user.peer_id(jid.as_str()) {
            // Nobody by that address: nothing matches.
            None => Some((u32::MAX, jid.is_bare())),
            Some(p) => Some((p, jid.is_bare())),
        },
    };
    let selected: Vec<usize> = (lo..hi.max(lo))
        .filter(|&i| {
            let e = &entries[i];
            with.is_none_or(|(p, bare)| if bare { e.with_bare == p } else { e.with == p })
                && q.start.is_none_or(|s| e.millis >= s)
                && q.end.is_none_or(|t| e.millis <= t)
                && wanted.as_ref().is_none_or(|w| w.contains(&i))
        })
        .collect();
    let count = selected.len();
    let max = q.max.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let find = |id: &str| -> Result<usize, StanzaError> {
        let pos = known(id)?;
        selected.binary_search(&pos).map_err(|_| item_not_found(id))
    };
    let (from, to, complete) = match (&q.after, &q.before) {
        (Some(after), _) => {
            let from = find(after)? + 1;
            let to = (from + max).min(count);
            (from, to, to == count)
        }
        (None, Some(before)) if before.is_empty() => {
            let from = count.saturating_sub(max);
            (from, count, from == 0)
        }
        (None, Some(before)) => {
            let to = find(before)?;
            let from = to.saturating_sub(max);
            (from, to, from == 0)
        }
        (None, None) => {
            let from = q.index.unwrap_or(0).min(count);
            let to = (from + max).min(count);
            (from, to, to == count)
        }
    };
    let mut items: Vec<Entry> = selected[from..to].iter().map(|&i| entries[i]).collect();
    if q.flip {
        items.reverse();
    }
    Ok(Page {
        items,
        first_index: from,
        count,
        complete,
    })
}

/// The `<fin/>` closing a page.
fn fin(page: &Page) -> Element {
    let in_order: Vec<&Entry> = {
        let mut v: Vec<&Entry> = page.items.iter().collect();
        v.sort_by_key(|e| e.offset);
        v
    };
    let ends = in_order
        .first()
        .zip(in_order.last())
        .map(|(f, l)| (f.id, l.id));
    fin_element(page.complete, page.first_index, page.count, ends)
}

/// The `<fin/>` closing a page of `count` matches whose first message (in archive order)
/// is at `first_index`; `ends`: the archive ids of the page's first and last message in
/// archive order (`None` for an empty page).
pub fn fin_element(
    complete: bool,
    first_index: usize,
    count: usize,
    ends: Option<(Uuid, Uuid)>,
) -> Element {
    let mut fin = Element::new("fin", NS_MAM);
    if complete {
        fin.set_attr("complete", "true");
    }
    let mut set = Element::new("set", NS_RSM);
    if let Some((first, last)) = ends {
        set.push_child(
            Element::new("first", NS_RSM)
                .with_attr("index", first_index.to_string())
                .with_text(first.hyphenated().to_string()),
        );
        set.push_child(Element::new("last", NS_RSM).with_text(last.hyphenated().to_string()));
    }
    set.push_child(Element::new("count", NS_RSM).with_text(count.to_string()));
    fin.with_child(set)
}

/// The query form (the answer to a `get` of `<query xmlns='urn:xmpp:mam:2'/>`), with
/// the XEP-0431 full-text field when `fulltext`.
pub fn query_form(fulltext: bool) -> Element {
    let field = |var: &str, kind: &str| {
        Element::new("field", NS_DATA)
            .with_attr("var", var)
            .with_attr("type", kind)
    };
    let mut x = Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(
            field("FORM_TYPE", "hidden")
                .with_child(Element::new("value", NS_DATA).with_text(NS_MAM)),
        )
        .with_child(field("with", "jid-single"))
        .with_child(field("start", "text-single"))
        .with_child(field("end", "text-single"));
    if fulltext {
        x.push_child(field(FULLTEXT_FIELD, "text-single").with_attr("label", "Search text"));
    }
    let x = x
        .with_child(field("after-id", "text-single"))
        .with_child(field("before-id", "text-single"))
        .with_child(field("ids", "text-multi"));
    Element::new("query", NS_MAM).with_child(x)
}

fn prefs() -> Element {
    Element::new("prefs", NS_MAM)
        .with_attr("default", "always")
        .with_child(Element::new("always", NS_MAM))
        .with_child(Element::new("never", NS_MAM))
}

fn metadata(user: Option<&UserArchive>) -> Element {
    let mut m = Element::new("metadata", NS_MAM);
    let entries = user.map(UserArchive::entries).unwrap_or_default();
    if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
        for (name, e) in [("start", first), ("end", last)] {
            m.push_child(
                Element::new(name, NS_MAM)
                    .with_attr("id", e.id.hyphenated().to_string())
                    .with_attr(
                        "timestamp",
                        Timestamp::from_micros(e.millis.saturating_mul(1000)).to_rfc3339(),
                    ),
            );
        }
    }
    m
}

/// Decides how to answer an archive query (an IQ in the `urn:xmpp:mam:2` namespace the
/// router forwarded from the user's own session).
pub fn plan(index: &Index, query: StanzaReceived) -> Plan {
    let Some(request) = parse_stanza(&query.xml) else {
        tracing::warn!(event = %query.event_id, "unparsable archive query on the log; skipped");
        return Plan::Reply(Vec::new());
    };
    let owner: BareJid = query.sender.bare();
    let user = index.user(&owner);
    let kind = request.attr("type").unwrap_or("");
    let payload = request.children().next();
    let (name, namespace) = payload
        .map(|p| (p.name(), p.namespace()))
        .unwrap_or(("", ""));
    let reply =
        |child: Option<Element>| Plan::Reply(vec![answer_delivery(&query, &request, child)]);
    let error =
        |e: StanzaError| Plan::Reply(error_delivery(&query, &request, &e).into_iter().collect());
    match (kind, name, namespace) {
        ("get", "query", NS_MAM) => reply(Some(query_form(false))),
        ("get", "metadata", NS_MAM) => reply(Some(metadata(user))),
        ("get", "prefs", NS_MAM) => reply(Some(prefs())),
        ("set", "prefs", NS_MAM) => {
            let p = payload.into_iter().next();
            let always_only = p.is_some_and(|p| {
                p.attr("default") == Some("always")
                    && p.children().all(|c| c.children().next().is_none())
            });
            if always_only {
                reply(Some(prefs()))
            } else {
                error(
                    StanzaError::new(StanzaErrorCondition::FeatureNotImplemented)
                        .with_type(StanzaErrorType::Cancel)
                        .with_text(
                            "this server archives every one-to-one message (default always)",
                        ),
                )
            }
        }
        ("set", "query", NS_MAM) => {
            let parsed = payload
                .map(parse_query)
                .unwrap_or_else(|| Ok(Query::default()));
            let q = match parsed {
                Ok(q) => q,
                Err(e) => return error(e),
            };
            match evaluate(user, &q) {
                Err(e) => error(e),
                Ok(page) => {
                    let fin = fin(&page);
                    let answer = Answer {
                        query_id: q.query_id.clone(),
                        items: page.items,
                        fin,
                        request,
                        query,
                    };
                    Plan::Fetch(Box::new(answer))
                }
            }
        }
        _ => error(
            StanzaError::new(StanzaErrorCondition::FeatureNotImplemented)
                .with_type(StanzaErrorType::Cancel),
        ),
    }
}

/// Parses a XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss]TZD`, TZD `Z` or `±hh:mm`).
pub fn parse_datetime(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = text.get(from..from + len)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &text[start..i];
        let six: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        micros = six.parse().ok()?;
    }
    let offset_secs = match &text[i..] {
        "Z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let h = num(i + 1, 2)?;
            let m = num(i + 4, 2)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(Timestamp::from_micros(secs * 1_000_000 + micros))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

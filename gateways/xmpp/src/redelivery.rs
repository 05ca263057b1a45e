//! What the delivery consumer does about repeats and about deliveries it cannot make.
//!
//! - **Repeats.** A processor that crashed after appending its outputs but before
//!   committing its input offsets appends the same deliveries again, under the same
//!   (derived) event ids. [`Recent`] remembers, per session, the delivery ids handed to
//!   it (see [`imbus_xmpp_c2s::recent`] for the bound), so a session is handed each
//!   delivery once, across Stream Management resumptions too (a resumed session keeps
//!   its session id).
//! - **Undeliverable IMs.** A delivery can find its session gone: it ended after the
//!   router decided, the gateway restarted, or its connection could not take more. A
//!   chat or normal message with a body is then handed back to the router on `routed`
//!   under the id it was received with ([`bounce_back`]), addressed to the full JID it
//!   was meant for; the router applies RFC 6121 §8.5.3.2.1 as for any message to an
//!   unbound full JID (the user's other resources, or offline storage). Until the router
//!   has read the session's end it routes the message to the same session again, and it
//!   comes back again: the loop ends when the `Closed` record is read. Other stanzas
//!   (presence, IQs, carbons, errors, headlines) to a gone session are dropped, as RFC
//!   6121 prescribes for a full JID with no session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use imbus_core::{
    Delivery, DeliveryCopy, FullJid, Jid, SessionId, StanzaKind, StanzaReceived, Timestamp, Uuid,
};
use imbus_xmpp_c2s::RecentDeliveries;
use imbus_xmpp_stream::Element;

/// The XML namespace of message bodies.
const NS_CLIENT: &str = "jabber:client";
/// The XML namespace of delayed delivery stamps (XEP-0203).
const NS_DELAY: &str = "urn:xmpp:delay";
/// How often sessions with no recent delivery are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// One session a [`Delivery`] is for: its own (`to`, `session_id`, `event_id`), or one
/// of its copies'.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) to: &'a FullJid,
    pub(crate) session_id: &'a SessionId,
    pub(crate) event_id: Uuid,
}

impl<'a> Target<'a> {
    /// The session `delivery` itself names.
    pub(crate) fn of(delivery: &'a Delivery) -> Self {
        Self {
            to: &delivery.to,
            session_id: &delivery.session_id,
            event_id: delivery.event_id,
        }
    }

    /// The session of one of a delivery's copies.
    pub(crate) fn copy(copy: &'a DeliveryCopy) -> Self {
        Self {
            to: &copy.to,
            session_id: &copy.session_id,
            event_id: copy.event_id,
        }
    }
}

/// The recent delivery ids of every session that received something within the window.
#[derive(Debug)]
pub(crate) struct Recent {
    sessions: HashMap<String, RecentDeliveries>,
    start: Instant,
    last_sweep: Instant,
}

impl Recent {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            sessions: HashMap::new(),
            start: now,
            last_sweep: now,
        }
    }

    fn secs(&self, now: Instant) -> u32 {
        u32::try_from(now.duration_since(self.start).as_secs()).unwrap_or(u32::MAX)
    }

    /// Whether the delivery to `target` was already handed to its session within the
    /// window.
    pub(crate) fn is_repeat(&mut self, target: &Target<'_>) -> bool {
        let now = self.secs(Instant::now());
        self.sessions
            .get_mut(target.session_id.as_str())
            .is_some_and(|recent| {
                recent.expire(now);
                recent.contains(target.event_id.as_u128())
            })
    }

    /// Records that the delivery to `target` was handed to its session.
    pub(crate) fn record(&mut self, target: &Target<'_>) {
        let now = self.secs(Instant::now());
        match self.sessions.get_mut(target.session_id.as_str()) {
            Some(recent) => {
                recent.first_time(target.event_id.as_u128(), now);
            }
            None => {
                let mut recent = RecentDeliveries::new();
                recent.first_time(target.event_id.as_u128(), now);
                self.sessions
                    .insert(target.session_id.as_str().to_owned(), recent);
            }
        }
    }

    /// Forgets the ids that aged out, and the sessions left with none.
    pub(crate) fn sweep(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        self.last_sweep = now;
        let secs = self.secs(now);
        self.sessions.retain(|_, recent| {
            recent.expire(secs);
            !recent.is_empty()
        });
    }
}

/// The stanza to hand back to the router for an IM whose session is gone, or `None`
/// when the delivery is not one (it is then dropped). `domain` is the served domain:
/// the delay stamp the router added when it took the message out of offline storage is
/// removed, since the message may be stored again.
pub(crate) fn bounce_back(
    delivery: &Delivery,
    target: &Target<'_>,
    element: &Element,
    domain: &str,
) -> Option<StanzaReceived> {
    if element.name() != "message"
        || !matches!(element.attr("type"), None | Some("chat" | "normal"))
        || element.child("body", NS_CLIENT).is_none()
    {
        return None;
    }
    let sender = FullJid::new(element.attr("from")?).ok()?;
    let mut stanza = element.clone();
    stanza.nodes_mut().retain(|node| match node {
        imbus_xmpp_stream::Node::Element(child) => {
            !(child.is("delay", NS_DELAY) && child.attr("from") == Some(domain))
        }
        imbus_xmpp_stream::Node::Text(_) => true,
    });
    Some(StanzaReceived {
        event_id: delivery.source_event_id,
        gateway_id: delivery.gateway_id.clone(),
        // The session the message could not reach (the sender's is not known here, and
        // the router does not need it for inbound processing).
        session_id: target.session_id.clone(),
        received_at: delivery.delayed_from.unwrap_or_else(Timestamp::now),
        sender,
        recipient: Some(Jid::from(target.to.clone())),
        kind: StanzaKind::Message,
        stanza_type: stanza.attr("type").map(str::to_owned),
        stanza_id: stanza.attr("id").map(str::to_owned),
        xml: stanza.to_xml(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use imbus_core::{GatewayId, SessionId, Uuid};

    use super::*;

    fn delivery(xml: &str, delayed: bool) -> (Delivery, Element) {
        let delivery = Delivery {
            event_id: Uuid::from_u128(2),
            source_event_id: Uuid::from_u128(1),
            to: FullJid::new("bob@example.com/desk").unwrap(),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: SessionId::new("s-1").unwrap(),
            xml: xml.to_owned(),
            delayed_from: delayed.then(|| Timestamp::from_micros(5_000_000)),
            copies: Vec::new(),
        };
        let element = imbus_xmpp_stream::parse_stanza(xml).unwrap();
        (delivery, element)
    }

    #[test]
    fn an_im_for_a_gone_session_goes_back_to_the_router_under_its_own_id() {
        let (d, e) = delivery(
            "<message xmlns='jabber:client' from='alice@example.com/phone' \
             to='bob@example.com/desk' type='chat' id='m1'><body>hi</body>\
             <delay xmlns='urn:xmpp:delay' from='example.com' stamp='x'>Offline storage</delay>\
             </message>",
            true,
        );
        let back = bounce_back(&d, &Target::of(&d), &e, "example.com").unwrap();
        assert_eq!(back.event_id, Uuid::from_u128(1));
        assert_eq!(back.sender.as_str(), "alice@example.com/phone");
        assert_eq!(
            back.recipient.as_ref().map(|j| j.to_string()),
            Some("bob@example.com/desk".to_owned())
        );
        assert_eq!(back.owner().as_str(), "bob@example.com");
        assert_eq!(back.received_at, Timestamp::from_micros(5_000_000));
        assert_eq!(back.stanza_type.as_deref(), Some("chat"));
        assert!(back.xml.contains("<body>hi</body>"), "{}", back.xml);
        assert!(!back.xml.contains("delay"), "{}", back.xml);
    }

    #[test]
    fn other_stanzas_for_a_gone_session_are_dropped() {
        for xml in [
            "<presence xmlns='jabber:client' from='alice@example.com/phone'/>",
            "<iq xmlns='jabber:client' type='result' id='1' from='example.com'/>",
            "<message xmlns='jabber:client' from='alice@example.com/phone' type='headline'>\
             <body>x</body></message>",
            "<message xmlns='jabber:client' from='alice@example.com/phone' type='error'>\
             <body>x</body></message>",
            "<message xmlns='jabber:client' from='alice@example.com/phone' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client' from='bob@example.com' type='chat'>\
             <received xmlns='urn:xmpp:carbons:2'/></message>",
        ] {
            let (d, e) = delivery(xml, false);
            assert!(
                bounce_back(&d, &Target::of(&d), &e, "example.com").is_none(),
                "{xml}"
            );
        }
    }

    #[test]
    fn a_repeat_is_recognised_per_session() {
        let mut recent = Recent::new();
        let (d, _) = delivery("<message xmlns='jabber:client'/>", false);
        assert!(!recent.is_repeat(&Target::of(&d)));
        recent.record(&Target::of(&d));
        assert!(recent.is_repeat(&Target::of(&d)));
        let mut other_session = d.clone();
        other_session.session_id = SessionId::new("s-2").unwrap();
        assert!(!recent.is_repeat(&Target::of(&other_session)));
        let mut other_id = d.clone();
        other_id.event_id = Uuid::from_u128(3);
        assert!(!recent.is_repeat(&Target::of(&other_id)));
    }

    #[test]
    fn a_copy_is_its_own_target() {
        let (mut d, e) = delivery(
            "<message xmlns='jabber:client' from='alice@example.com/phone' \
             to='bob@example.com/desk' type='chat' id='m1'><body>hi</body></message>",
            false,
        );
        d.copies.push(DeliveryCopy {
            event_id: Uuid::from_u128(9),
            to: FullJid::new("carol@example.com/tab").unwrap(),
            session_id: SessionId::new("s-7").unwrap(),
        });
        let mut recent = Recent::new();
        recent.record(&Target::of(&d));
        let copy = Target::copy(&d.copies[0]);
        assert!(
            !recent.is_repeat(&copy),
            "the copy's session was handed nothing yet"
        );
        recent.record(&copy);
        assert!(recent.is_repeat(&copy));
        let back = bounce_back(&d, &copy, &e, "example.com").unwrap();
        assert_eq!(
            back.recipient.as_ref().map(|j| j.to_string()),
            Some("carol@example.com/tab".to_owned())
        );
        assert_eq!(back.session_id.as_str(), "s-7");
        assert_eq!(back.event_id, Uuid::from_u128(1), "the message's own id");
    }
}

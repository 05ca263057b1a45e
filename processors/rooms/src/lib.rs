//! The imbus rooms processor: multi-user chat (XEP-0045) as a pure state machine, and
//! [`run`], the consume/produce loop around it (consumer group `rooms`).
//!
//! [`Rooms::handle`] takes one input — a stanza addressed to a room, an occupant or the
//! chat service, or the end of a client session — and returns what to write: stanzas to
//! deliver to sessions ([`Output::Deliver`]), stanzas for the router to deliver to users
//! outside the room ([`Output::Route`]: invitations, declines), the room's new state for
//! the compacted `rooms` changelog ([`Output::Room`]) and one compliance record per
//! recipient of each message ([`Output::Compliance`]). No IO happens in [`Rooms`]; the
//! consume/produce loop is [`run`]. A restarted processor
//! folds the changelog with [`Rooms::apply`] and carries on exactly where it stopped:
//! every [`RoomEvent::Updated`] carries the room's complete state (configuration,
//! affiliations, occupants and the sessions they use, subject, history), so the last
//! record of a room is enough.
//!
//! Output ids are derived from the input: deliveries of a message's content use
//! [`message_delivery_id`] (the message's event id and the recipient's full JID), other
//! deliveries a UUID v5 of the event id, their position and the recipient. Processing an
//! input again after a crash, from the same state, gives the same outputs.
//!
//! # Partitions
//!
//! Everything about a room is keyed by its bare JID
//! ([`RoomsConfig::canonical_room`] gives it for any address of the room or of an
//! occupant). An instance acts on the rooms it folded with [`Rooms::apply`] (its
//! partitions); a session end ([`Input::SessionClosed`]) removes that session's
//! occupants from those rooms. The room directory and room search list every public
//! room: rooms of other partitions are folded with [`Rooms::observe`] and only listed.
//!
//! # Addresses
//!
//! The service answers for every chat node alias of the cluster: this node's primary
//! domain ([`RoomsConfig::service`]) and the others ([`RoomsConfig::aliases`]). The
//! alias is part of a room's identity: `team@conference-1-mycup.example.com` and
//! `team@chat.example.com` are two rooms, and the room directory of an alias lists that
//! alias's rooms.
//!
//! # Rooms
//!
//! - **Entering** (presence to `room@service/nick`): the first user creates the room and
//!   becomes its owner. A client that sends `<x xmlns='http://jabber.org/protocol/muc'/>`
//!   gets a *locked* room (status 201) until it submits the configuration form (an empty
//!   `<x xmlns='jabber:x:data' type='submit'/>` accepts the defaults) or cancels (the room
//!   is destroyed); with [`RoomsConfig::lock_new_rooms`] off, or for clients without the
//!   MUC extension, the room is usable at once. Entry is refused with `forbidden`
//!   (banned), `registration-required` (members-only), `not-authorized` (wrong
//!   password), `conflict` (nickname taken), `service-unavailable` (full) or
//!   `item-not-found` (locked). The newcomer gets the occupants' presence, its own
//!   presence (status 110, 100 in non-anonymous rooms, 201 when created), the last
//!   messages with XEP-0203 delay stamps (at most the room's history length, bounded by
//!   [`RoomsConfig::max_history_length`]; `<history maxstanzas/maxchars/seconds/since/>`
//!   limits it further) and then the subject.
//! - One session is one occupant: a second session of the same user enters with its
//!   own nickname (the same nickname is a `conflict`).
//! - **Temporary** rooms end when their last occupant leaves (or its session ends);
//!   **persistent** rooms stay.
//! - **Group chat** goes to every occupant from `room@service/nick`; private messages to
//!   `room@service/nick` go to that occupant only. Non-occupants get `not-acceptable`,
//!   visitors of a moderated room `forbidden`.
//! - **Administration**: `muc#owner` (configuration form, destruction) and `muc#admin`
//!   (member, admin, owner and outcast lists; kick, ban, voice, moderator) follow
//!   XEP-0045's hierarchy: admins cannot touch admins or owners (`not-allowed`), only
//!   owners change admin and owner affiliations, the last owner cannot leave the role
//!   (`conflict`).
//! - **Invitations**: mediated invitations (`<invite/>` in `muc#user`) reach the invitee
//!   through the router; an invitation by an admin or owner (or by anyone when the room
//!   allows invites) into a members-only room makes the invitee a member. Declines go
//!   back to the inviter. Direct invitations (XEP-0249) travel from user to user and do
//!   not involve the room.
//! - **IQs to an occupant** (`room@service/nick`) from another occupant are relayed from
//!   the sender's room address, and so are the answers; ids are not rewritten.
//! - **SIP users** cannot take part in rooms: a stanza published by a gateway in
//!   [`RoomsConfig::sip_gateways`], or from a domain in [`RoomsConfig::sip_domains`], is
//!   refused with `not-allowed` and the text [`SIP_REFUSED`].
//!
//! # Discovery and the room directory
//!
//! `disco#info` to the service gives the `conference`/`text` identity and the features
//! `http://jabber.org/protocol/muc`, disco, RSM and `jabber:iq:search`; to a room, its
//! `muc_*` features and a `muc#roominfo` form (description, subject, occupants).
//! `disco#items` to the service lists the public rooms sorted by JID, with Result Set
//! Management (XEP-0059: `max`, `after`, `before`, `index`, `count`); to a public room,
//! its occupants' room addresses.
//!
//! # Room search
//!
//! An IQ `get` of `<query xmlns='jabber:iq:search'/>` to the service returns this
//! XEP-0004 form (XEP-0055 extensibility):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `FORM_TYPE` | hidden | `jabber:iq:search` |
//! | `name` | text-single | the room's name (its node when unnamed) contains this text |
//! | `description` | text-single | the room's description contains this text |
//! | `subject` | text-single | the room's current subject contains this text |
//!
//! Matching is case-insensitive; empty fields match everything, so an empty form lists
//! every public room. The `set` answer is a `result` form with the reported fields `jid`,
//! `name`, `description`, `subject` and `occupants`, one `<item/>` per public room, sorted
//! by room JID. A `<set xmlns='http://jabber.org/protocol/rsm'/>` next to the form pages
//! the results like the room directory. Hidden and locked rooms are never found.
//!
//! ```xml
//! <iq type='set' to='conference.example.com' id='s1'>
//!   <query xmlns='jabber:iq:search'>
//!     <x xmlns='jabber:x:data' type='submit'>
//!       <field var='FORM_TYPE'><value>jabber:iq:search</value></field>
//!       <field var='name'><value>release</value></field>
//!     </x>
//!   </query>
//! </iq>
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod rooms;
mod runner;
mod state;
mod xml;

pub use config::{ConfigError, RoomsConfig};
pub use rooms::{Input, Output, Rooms, SIP_REFUSED, message_delivery_id, room_archive_id};
pub use runner::{GROUP, RoomsError, run};
pub use state::{
    Affiliation, HistoryMessage, Occupant, Role, Room, RoomConfig, RoomEvent, Subject, Whois,
};

#[cfg(test)]
mod tests;

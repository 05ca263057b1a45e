#!/usr/bin/env python3
"""Chat rooms (XEP-0045) with slixmpp against `imbus serve`.

Usage:
  slixmpp_muc.py HOST PORT SERVICE SCENARIO

Users are userN@<domain of SERVICE without its first label> with password Pw-userN
(user1 … user4, user1 … user50 for fan-out-50, as many as the scenario needs).

Every client connects from its own loopback address (userN from 127.0.N/250.N%250+1), because
the server limits new connections per source address.

Scenarios:
  basic          create an instant room, 20 messages, history on join (15 by default,
                 maxstanzas respected), fan-out to every occupant once, leave, the
                 temporary room vanishes with its last occupant, the server lists the
                 chat service in disco#items
  persist-create create a persistent room with a name, a subject and 3 messages
  persist-check  the persistent room is there with its name, subject and history
  history-2      the persistent room's history for a new participant follows the live
                 setting rooms.history_for_new_joiners once it is 2 (entering again
                 until the change has reached the rooms processor)
  access         members-only and password-protected rooms refuse outsiders with
                 registration-required and not-authorized; the right password and a
                 mediated invitation from the owner let them in
  moderation     kick (307), an admin cannot ban an owner (not-allowed), ban (301),
                 a banned user is refused (forbidden)
  fan-out-50     50 occupants in one room: one message reaches each of them exactly once
                 (every arrival counted, nothing deduplicated)
  direct-invite  XEP-0249 direct invitations travel from user to user with the room JID
                 (and its password when it has one); they do not make the invitee a
                 member: a members-only room refuses the invitee (registration-required)
                 until the owner makes them a member
  directory      disco#items on the service lists exactly the public, unlocked rooms,
                 sorted by JID, paged with XEP-0059 (max/after, before, index, count);
                 the jabber:iq:search form finds rooms by a word of their name or
                 description (case-insensitive), never hidden or locked rooms
  archive-yesterday  create the persistent room notes (named "Release notes") and say 3
                 messages, one about the quarterly budget (the test runs the server a day
                 behind for this one); every echo carries the room's stanza-id
  archive-today  4 more messages, 22 of them numbered; a user outside the room searches
                 the transcript (XEP-0313 with XEP-0431 full-text search): "budget" finds
                 yesterday's and today's message, case-insensitively, with their delay
                 stamps and the ids occupants saw; all words must match; whole words only;
                 an end date keeps yesterday's only; with = an occupant; XEP-0059 paging
                 (max/after, before, count, index, complete); the query form offers
                 full-text search
  outage-before  create the persistent room ops and say before-0 … before-4
  outage-during  (the archive database is down) two occupants exchange during-0 …
                 during-9, each arriving once; an archive query gets a wait error
  outage-after   (the database is back) the archive holds all 15 messages, in order

Prints "OK: …" and exits 0 on success; prints "FAILED: …" and exits 1 otherwise.
MUC_DEBUG=1 prints every message the clients receive.
"""

import asyncio
import os
import ssl
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

TIMEOUT = float(os.environ.get("IMBUS_INTEROP_TIMEOUT", "30"))

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_DATA = "jabber:x:data"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_CONFERENCE = "jabber:x:conference"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SEARCH = "jabber:iq:search"
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_SID = "urn:xmpp:sid:0"
FULLTEXT = "{urn:xmpp:fulltext:0}fulltext"


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def source_address(n):
    """The loopback address user n connects from."""
    return f"127.0.{n // 250}.{n % 250 + 1}"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, source):
        super().__init__(jid, password)
        self.source = source
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0203")
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        # Everything from the chat service, in arrival order.
        self.presences = []
        self.messages = []
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("presence", self.on_presence)
        # Every message, subject-only ones too (the "message" event needs a body).
        self.register_handler(
            Callback("every message", MatchXPath("{jabber:client}message"), self.on_message)
        )

    async def _attempt_connection(self, host, port, tls, server_hostname):
        # slixmpp's own connection attempt, from this client's source address (STARTTLS
        # only: direct TLS is off).
        self.event_when_connected = "connected"
        try:
            await self.loop.create_connection(
                lambda: self, host, port, local_addr=(self.source, 0)
            )
            return True
        except OSError as e:
            self.event("connection_failed", e)
            return False

    async def start(self, _event):
        self.send_presence()
        self.ready.set()

    def on_presence(self, pres):
        self.presences.append(pres)
        self.changed.set()

    def on_message(self, msg):
        if os.environ.get("MUC_DEBUG"):
            print(self.boundjid.bare, "got", msg)
        self.messages.append(msg)
        self.changed.set()

    async def wait_for(self, pred, what):
        """Waits until pred() is true (checked on every stanza received)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            result = pred()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Failed(f"{self.boundjid.bare}: timed out waiting for {what}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    # ----- rooms -----

    async def join(self, room, nick, password=None, maxstanzas=None):
        """Enters `room` as `nick`: ('ok', statuses, history bodies, subject) once the
        subject arrives, or ('error', condition)."""
        occupant = f"{room}/{nick}"
        start_p, start_m = len(self.presences), len(self.messages)
        pres = self.make_presence(pto=occupant)
        x = ET.Element(f"{{{NS_MUC}}}x")
        if password is not None:
            ET.SubElement(x, f"{{{NS_MUC}}}password").text = password
        if maxstanzas is not None:
            ET.SubElement(x, f"{{{NS_MUC}}}history", {"maxstanzas": str(maxstanzas)})
        pres.append(x)
        pres.send()

        def outcome():
            for p in self.presences[start_p:]:
                if str(p["from"]) != occupant:
                    continue
                if p["type"] == "error":
                    return ("error", error_condition(p))
                x = p.xml.find(f"{{{NS_MUC_USER}}}x")
                if x is not None and any(
                    s.get("code") == "110" for s in x.findall(f"{{{NS_MUC_USER}}}status")
                ):
                    return ("joined", statuses(p))
            return None

        result = await self.wait_for(outcome, f"entering {occupant}")
        if result[0] == "error":
            return result
        locked = "201" in result[1]
        if locked:
            # A new room is locked until configured; history and subject come then.
            return ("ok", result[1], [], None)

        def subject():
            for m in self.messages[start_m:]:
                if m["from"].bare == room and m.xml.find("{jabber:client}subject") is not None \
                        and m.xml.find("{jabber:client}body") is None:
                    return m
            return None

        subj = await self.wait_for(subject, f"the subject of {room}")
        history = [
            m["body"]
            for m in self.messages[start_m:]
            if m["from"].bare == room and m["body"] and m["delay"]["stamp"]
        ]
        return ("ok", result[1], history, subj.xml.find("{jabber:client}subject").text or "")

    async def configure(self, room, fields):
        iq = self.make_iq_set(ito=room)
        query = ET.Element(f"{{{NS_MUC_OWNER}}}query")
        form = ET.SubElement(query, f"{{{NS_DATA}}}x", {"type": "submit"})
        field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": "FORM_TYPE"})
        ET.SubElement(field, f"{{{NS_DATA}}}value").text = "http://jabber.org/protocol/muc#roomconfig"
        for var, value in fields.items():
            field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
        iq.append(query)
        await iq.send(timeout=TIMEOUT)

    async def admin(self, room, **item):
        """A muc#admin change; returns None on success, the error condition otherwise."""
        iq = self.make_iq_set(ito=room)
        query = ET.Element(f"{{{NS_MUC_ADMIN}}}query")
        ET.SubElement(query, f"{{{NS_MUC_ADMIN}}}item", item)
        iq.append(query)
        try:
            await iq.send(timeout=TIMEOUT)
            return None
        except IqError as e:
            return e.condition

    def say(self, room, body):
        self.send_message(mto=room, mbody=body, mtype="groupchat")

    def groupchat_bodies(self, room):
        return [
            m["body"]
            for m in self.messages
            if m["from"].bare == room and m["type"] == "groupchat" and m["body"]
            and not m["delay"]["stamp"]
        ]

    def leave(self, room, nick):
        self.send_presence(pto=f"{room}/{nick}", ptype="unavailable")

    async def query(self, to, kind, payload):
        """Sends an IQ `kind` with `payload` (an ElementTree element); the answer's
        element of the same name."""
        iq = self.make_iq_set(ito=to) if kind == "set" else self.make_iq_get(ito=to)
        iq.append(payload)
        answer = await iq.send(timeout=TIMEOUT)
        found = answer.xml.find(payload.tag)
        check(found is not None, f"the answer has no {payload.tag}: {answer}")
        return found

    async def mam(self, room, fields=None, **rsm):
        """Queries the room's archive: ([(id, stamp, from, body)], fin element, rsm answer)."""
        self.mam_queries = getattr(self, "mam_queries", 0) + 1
        qid = f"q{self.mam_queries}"
        query = ET.Element(f"{{{NS_MAM}}}query", {"queryid": qid})
        if fields:
            form = ET.SubElement(query, f"{{{NS_DATA}}}x", {"type": "submit"})
            for var, value in {"FORM_TYPE": NS_MAM, **fields}.items():
                field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
                ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
        add_rsm(query, rsm)
        start = len(self.messages)
        iq = self.make_iq_set(ito=room)
        iq.append(query)
        answer = await iq.send(timeout=TIMEOUT)
        fin = answer.xml.find(f"{{{NS_MAM}}}fin")
        check(fin is not None, f"the archive answer has no fin: {answer}")
        results = []
        # The results arrive before the IQ result, on the same stream.
        for m in self.messages[start:]:
            r = m.xml.find(f"{{{NS_MAM}}}result")
            if r is None or r.get("queryid") != qid:
                continue
            check(m["from"].bare == room, f"a result not from the room: {m}")
            fwd = r.find(f"{{{NS_FORWARD}}}forwarded")
            delay = fwd.find(f"{{{NS_DELAY}}}delay")
            msg = fwd.find("{jabber:client}message")
            results.append((r.get("id"), delay.get("stamp"), msg.get("from"),
                            msg.findtext("{jabber:client}body")))
        return results, fin, rsm_answer(fin)

    def stanza_ids(self, room):
        """{body: stanza-id} of the room's live group chat messages this client got."""
        out = {}
        for m in self.messages:
            if m["from"].bare != room or m["type"] != "groupchat" or not m["body"]:
                continue
            sid = m.xml.find(f"{{{NS_SID}}}stanza-id")
            if sid is not None and sid.get("by") == room:
                out[m["body"]] = sid.get("id")
        return out

    async def directory(self, service, **rsm):
        """disco#items on the service: ([room JIDs], {rsm element: (text, attributes)})."""
        query = ET.Element(f"{{{NS_DISCO_ITEMS}}}query")
        add_rsm(query, rsm)
        answer = await self.query(service, "get", query)
        jids = [i.get("jid") for i in answer.findall(f"{{{NS_DISCO_ITEMS}}}item")]
        return jids, rsm_answer(answer)

    async def search(self, service, fields, **rsm):
        """Submits the room search form: ([(jid, name, description)], rsm answer)."""
        query = ET.Element(f"{{{NS_SEARCH}}}query")
        form = ET.SubElement(query, f"{{{NS_DATA}}}x", {"type": "submit"})
        for var, value in {"FORM_TYPE": NS_SEARCH, **fields}.items():
            field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
        add_rsm(query, rsm)
        answer = await self.query(service, "set", query)
        result = answer.find(f"{{{NS_DATA}}}x")
        check(result is not None and result.get("type") == "result",
              f"the search answer has no result form: {ET.tostring(answer)}")
        found = []
        for item in result.findall(f"{{{NS_DATA}}}item"):
            values = {f.get("var"): (f.findtext(f"{{{NS_DATA}}}value") or "")
                      for f in item.findall(f"{{{NS_DATA}}}field")}
            found.append((values.get("jid"), values.get("name"), values.get("description")))
        return found, rsm_answer(answer)


def add_rsm(query, rsm):
    """Adds a XEP-0059 <set/> with the given children (max, after, before, index)."""
    if not rsm:
        return
    st = ET.SubElement(query, f"{{{NS_RSM}}}set")
    for name, value in rsm.items():
        ET.SubElement(st, f"{{{NS_RSM}}}{name}").text = str(value)


def rsm_answer(answer):
    """The <set/> of an answer as {child: (text, attributes)}, None without one."""
    st = answer.find(f"{{{NS_RSM}}}set")
    if st is None:
        return None
    return {c.tag.split("}")[1]: (c.text or "", dict(c.attrib)) for c in st}


def statuses(pres):
    x = pres.xml.find(f"{{{NS_MUC_USER}}}x")
    if x is None:
        return set()
    return {s.get("code") for s in x.findall(f"{{{NS_MUC_USER}}}status")}


def error_condition(stanza):
    err = stanza.xml.find("{jabber:client}error")
    if err is None:
        return None
    for child in err:
        if child.tag.startswith(f"{{{NS_STANZAS}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}")[1]
    return None


async def connect(host, port, domain, n):
    client = Client(f"user{n}@{domain}/muc", f"Pw-user{n}", source_address(n))
    client.connect(host, int(port))
    try:
        await asyncio.wait_for(client.ready.wait(), TIMEOUT)
    except asyncio.TimeoutError:
        raise Failed(f"user{n} could not log in")
    return client


async def create(client, room, nick, fields=None):
    """Creates `room` (locked, status 201) and configures it (`fields`, or the defaults)."""
    result = await client.join(room, nick)
    check(result[0] == "ok", f"creating {room}: {result}")
    check("201" in result[1], f"{room} was not new: statuses {result[1]}")
    await client.configure(room, fields or {})


# ----- scenarios -----


async def basic(clients, service, domain):
    alice, bob, carol, dave = clients
    room = f"lobby@{service}"

    items = await alice.plugin["xep_0030"].get_items(jid=domain, timeout=TIMEOUT)
    listed = [str(i[0]) for i in items["disco_items"]["items"]]
    check(service in listed, f"the server's disco#items does not list {service}: {listed}")

    await create(alice, room, "Alice")
    for i in range(20):
        alice.say(room, f"h-{i}")
    await alice.wait_for(lambda: len(alice.groupchat_bodies(room)) >= 20, "20 echoes")
    check(alice.groupchat_bodies(room) == [f"h-{i}" for i in range(20)],
          f"echoes out of order: {alice.groupchat_bodies(room)}")

    result = await bob.join(room, "Bob")
    check(result[0] == "ok" and "201" not in result[1], f"bob entering: {result}")
    check(result[2] == [f"h-{i}" for i in range(5, 20)],
          f"bob's history is {result[2]}, expected h-5..h-19 (15 messages)")
    result = await carol.join(room, "Carol", maxstanzas=3)
    check(result[0] == "ok", f"carol entering: {result}")
    check(result[2] == ["h-17", "h-18", "h-19"], f"carol's history (maxstanzas 3) is {result[2]}")

    await alice.wait_for(
        lambda: any(str(p["from"]) == f"{room}/Carol" for p in alice.presences),
        "carol's presence in the room")

    alice.say(room, "fanout-1")
    bob.say(room, "fanout-2")
    for c in (alice, bob, carol):
        await c.wait_for(
            lambda c=c: "fanout-1" in c.groupchat_bodies(room)
            and "fanout-2" in c.groupchat_bodies(room),
            "the fan-out messages")
    # A repeat would arrive with the next message: one more round settles it.
    carol.say(room, "fanout-3")
    for c in (alice, bob, carol):
        await c.wait_for(lambda c=c: "fanout-3" in c.groupchat_bodies(room), "fanout-3")
        bodies = c.groupchat_bodies(room)
        for b in ("fanout-1", "fanout-2", "fanout-3"):
            check(bodies.count(b) == 1, f"{c.boundjid.bare} got {b} {bodies.count(b)} times")

    bob.leave(room, "Bob")

    def bob_left(c):
        return any(str(p["from"]) == f"{room}/Bob" and p["type"] == "unavailable"
                   for p in c.presences)

    await alice.wait_for(lambda: bob_left(alice), "bob leaving (seen by alice)")
    await carol.wait_for(lambda: bob_left(carol), "bob leaving (seen by carol)")

    alice.leave(room, "Alice")
    carol.leave(room, "Carol")
    await carol.wait_for(
        lambda: any(str(p["from"]) == f"{room}/Carol" and p["type"] == "unavailable"
                    for p in carol.presences),
        "carol's own unavailable presence")
    # The temporary room is gone: entering creates it again, empty.
    result = await dave.join(room, "Dave")
    check(result[0] == "ok" and "201" in result[1],
          f"the temporary room did not vanish with its last occupant: {result}")
    await dave.configure(room, {})
    await dave.wait_for(
        lambda: any(m["from"].bare == room and m.xml.find("{jabber:client}subject") is not None
                    for m in dave.messages),
        "the subject of the new room")
    old = [m["body"] for m in dave.messages if m["body"] and m["body"].startswith("h-")]
    check(old == [], f"the recreated room has the old history: {old}")
    return "rooms: create, history (15 and maxstanzas), fan-out once each, leave, temporary room vanishes"


async def persist_create(clients, service, _domain):
    alice = clients[0]
    room = f"team@{service}"
    await create(alice, room, "Alice", {
        "muc#roomconfig_persistentroom": "1",
        "muc#roomconfig_roomname": "Team room",
    })
    subject = alice.make_message(mto=room, mtype="groupchat")
    subject["subject"] = "Release planning"
    subject.send()
    for i in range(3):
        alice.say(room, f"p-{i}")
    await alice.wait_for(lambda: len(alice.groupchat_bodies(room)) >= 3, "3 echoes")
    await alice.wait_for(
        lambda: any(m.xml.find("{jabber:client}subject") is not None
                    and (m.xml.find("{jabber:client}subject").text or "") == "Release planning"
                    for m in alice.messages),
        "the subject change")
    alice.leave(room, "Alice")
    await alice.wait_for(
        lambda: any(str(p["from"]) == f"{room}/Alice" and p["type"] == "unavailable"
                    for p in alice.presences),
        "alice's own unavailable presence")
    return "persistent room created and left empty"


async def persist_check(clients, service, _domain):
    bob = clients[1]
    room = f"team@{service}"
    info = await bob.plugin["xep_0030"].get_info(jid=room, timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    check("muc_persistent" in features, f"the room is not persistent: {features}")
    names = [i[3] for i in info["disco_info"]["identities"]]
    check("Team room" in names, f"the room lost its name: {names}")
    result = await bob.join(room, "Bob")
    check(result[0] == "ok" and "201" not in result[1], f"bob entering the persistent room: {result}")
    check(result[2] == ["p-0", "p-1", "p-2"], f"history after restart: {result[2]}")
    check(result[3] == "Release planning", f"subject after restart: {result[3]!r}")
    return "persistent room kept its configuration, subject and history"


async def history_live(clients, service, _domain):
    bob = clients[1]
    room = f"team@{service}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    seen = []
    while True:
        result = await bob.join(room, "Bob")
        check(result[0] == "ok", f"bob entering: {result}")
        seen.append(result[2])
        if result[2] == ["p-1", "p-2"]:
            return f"history follows the live setting (histories seen: {seen})"
        check(result[2] == ["p-0", "p-1", "p-2"], f"unexpected history {result[2]}")
        check(loop.time() < deadline, f"the live setting never applied: {seen}")
        start = len(bob.presences)
        bob.leave(room, "Bob")
        await bob.wait_for(
            lambda: any(str(p["from"]) == f"{room}/Bob" and p["type"] == "unavailable"
                        for p in bob.presences[start:]),
            "bob's own unavailable presence")


async def access(clients, service, _domain):
    alice, bob = clients[0], clients[1]
    club = f"club@{service}"
    vault = f"vault@{service}"
    await create(alice, club, "Alice", {"muc#roomconfig_membersonly": "1"})
    await create(alice, vault, "Alice", {
        "muc#roomconfig_passwordprotectedroom": "1",
        "muc#roomconfig_roomsecret": "s3cret",
    })
    result = await bob.join(club, "Bob")
    check(result == ("error", "registration-required"), f"members-only room let bob in: {result}")
    result = await bob.join(vault, "Bob")
    check(result == ("error", "not-authorized"), f"password room without password: {result}")
    result = await bob.join(vault, "Bob", password="wrong")
    check(result == ("error", "not-authorized"), f"password room, wrong password: {result}")
    result = await bob.join(vault, "Bob", password="s3cret")
    check(result[0] == "ok", f"password room, right password: {result}")
    # A mediated invitation from the owner reaches bob from the room and makes him a
    # member, who may then enter.
    invite = alice.make_message(mto=club)
    x = ET.Element(f"{{{NS_MUC_USER}}}x")
    ET.SubElement(x, f"{{{NS_MUC_USER}}}invite", {"to": bob.boundjid.bare})
    invite.append(x)
    invite.send()

    def invitation():
        for m in bob.messages:
            x = m.xml.find(f"{{{NS_MUC_USER}}}x")
            if m["from"].bare == club and x is not None:
                inv = x.find(f"{{{NS_MUC_USER}}}invite")
                if inv is not None:
                    return (inv,)  # an element without children is falsy
        return None

    (inv,) = await bob.wait_for(invitation, "the invitation to the members-only room")
    check(inv.get("from", "").startswith(alice.boundjid.bare),
          f"the invitation does not name the inviter: {ET.tostring(inv)}")
    result = await bob.join(club, "Bob")
    check(result[0] == "ok", f"an invited member entering the members-only room: {result}")
    return ("members-only: registration-required; password: not-authorized; "
            "the password and a mediated invitation get in")


async def moderation(clients, service, _domain):
    alice, bob, carol = clients[0], clients[1], clients[2]
    room = f"arena@{service}"
    await create(alice, room, "Alice")
    for c, nick in ((bob, "Bob"), (carol, "Carol")):
        result = await c.join(room, nick)
        check(result[0] == "ok", f"{nick} entering: {result}")
    check(await alice.admin(room, jid=carol.boundjid.bare, affiliation="admin") is None,
          "making carol an admin")
    # Kick.
    check(await carol.admin(room, nick="Bob", role="none") is None, "carol kicking bob")
    await bob.wait_for(
        lambda: any(str(p["from"]) == f"{room}/Bob" and p["type"] == "unavailable"
                    and "307" in statuses(p) for p in bob.presences),
        "bob's kick (status 307)")
    result = await bob.join(room, "Bob")
    check(result[0] == "ok", f"bob entering again after a kick: {result}")
    # An admin cannot ban an owner.
    cond = await carol.admin(room, jid=alice.boundjid.bare, affiliation="outcast")
    check(cond == "not-allowed", f"an admin banning the owner got {cond!r}, expected not-allowed")
    # Ban.
    check(await carol.admin(room, jid=bob.boundjid.bare, affiliation="outcast") is None,
          "carol banning bob")
    await bob.wait_for(
        lambda: any(str(p["from"]) == f"{room}/Bob" and p["type"] == "unavailable"
                    and "301" in statuses(p) for p in bob.presences),
        "bob's ban (status 301)")
    result = await bob.join(room, "Bob")
    check(result == ("error", "forbidden"), f"a banned user entering: {result}")
    return "kick 307, admin cannot ban owner (not-allowed), ban 301, banned user forbidden"


async def fan_out_50(clients, service, _domain):
    crowd = clients[:50]
    room = f"crowd@{service}"
    await create(crowd[0], room, "U1")
    results = await asyncio.gather(
        *(c.join(room, f"U{n}") for n, c in enumerate(crowd[1:], start=2)))
    for n, result in enumerate(results, start=2):
        check(result[0] == "ok" and "201" not in result[1], f"user{n} entering: {result}")
    # Every entry has been answered: all 50 are occupants before the message is said.
    crowd[0].say(room, "crowd-1")
    for c in crowd:
        await c.wait_for(lambda c=c: "crowd-1" in c.groupchat_bodies(room), "crowd-1")
    # A repeat would arrive with the next message: one more round settles it.
    crowd[-1].say(room, "crowd-2")
    for c in crowd:
        await c.wait_for(lambda c=c: "crowd-2" in c.groupchat_bodies(room), "crowd-2")
    for c in crowd:
        bodies = c.groupchat_bodies(room)
        for b in ("crowd-1", "crowd-2"):
            check(bodies.count(b) == 1, f"{c.boundjid.bare} got {b} {bodies.count(b)} times")
    return "50 occupants: each message arrived exactly once at each of the 50"


def send_direct_invitation(inviter, to, room, password=None, reason=None):
    """A XEP-0249 direct invitation from `inviter` to the bare JID `to`."""
    msg = inviter.make_message(mto=to)
    attrs = {"jid": room}
    if password is not None:
        attrs["password"] = password
    if reason is not None:
        attrs["reason"] = reason
    msg.append(ET.Element(f"{{{NS_CONFERENCE}}}x", attrs))
    msg.send()


def direct_invitations(client, room):
    """(sender, <x/>) of every direct invitation to `room` the client received."""
    found = []
    for m in client.messages:
        x = m.xml.find(f"{{{NS_CONFERENCE}}}x")
        if x is not None and x.get("jid") == room:
            found.append((m["from"], x))
    return found


async def direct_invite(clients, service, _domain):
    alice, bob, carol = clients[0], clients[1], clients[2]
    den = f"den@{service}"
    commons = f"commons@{service}"
    await create(alice, den, "Alice", {
        "muc#roomconfig_membersonly": "1",
        "muc#roomconfig_passwordprotectedroom": "1",
        "muc#roomconfig_roomsecret": "d00r",
    })
    await create(alice, commons, "Alice")

    send_direct_invitation(alice, bob.boundjid.bare, den, password="d00r", reason="Come in")
    send_direct_invitation(alice, carol.boundjid.bare, commons)
    await bob.wait_for(lambda: direct_invitations(bob, den), "the direct invitation to den")
    await carol.wait_for(lambda: direct_invitations(carol, commons),
                         "the direct invitation to commons")
    ((sender, x),) = direct_invitations(bob, den)
    check(sender.bare == alice.boundjid.bare,
          f"the direct invitation comes from {sender}, not from the inviter")
    check(x.get("password") == "d00r" and x.get("reason") == "Come in",
          f"the direct invitation lost its password or reason: {ET.tostring(x)}")
    ((sender, x),) = direct_invitations(carol, commons)
    check(sender.bare == alice.boundjid.bare,
          f"the direct invitation comes from {sender}, not from the inviter")
    check(x.get("password") is None,
          f"an invitation to a room without password has one: {ET.tostring(x)}")

    result = await carol.join(commons, "Carol")
    check(result[0] == "ok", f"carol entering the open room she was invited to: {result}")
    # The room never saw the direct invitation: bob is no member yet.
    result = await bob.join(den, "Bob", password="d00r")
    check(result == ("error", "registration-required"),
          f"a direct invitation let a non-member into a members-only room: {result}")
    check(await alice.admin(den, jid=bob.boundjid.bare, affiliation="member") is None,
          "alice making bob a member")
    result = await bob.join(den, "Bob", password="d00r")
    check(result[0] == "ok", f"bob entering as a member with the password: {result}")
    return ("direct invitations arrive from the inviter with the room JID (and password); "
            "members-only needs the owner to make the invitee a member")


async def directory(clients, service, _domain):
    alice = clients[0]
    info = await alice.plugin["xep_0030"].get_info(jid=service, timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    for feature in (NS_RSM, NS_SEARCH, NS_DISCO_ITEMS):
        check(feature in features, f"the service does not announce {feature}: {features}")

    rooms = {
        "alpha": {"muc#roomconfig_roomname": "Garden club",
                  "muc#roomconfig_roomdesc": "Roses and tulips"},
        "bravo": {"muc#roomconfig_roomname": "Book circle",
                  "muc#roomconfig_roomdesc": "Monthly novels"},
        "charlie": {"muc#roomconfig_roomname": "Release planning",
                    "muc#roomconfig_roomdesc": "Shipping the next version"},
        "delta": {"muc#roomconfig_roomdesc": "Chess openings"},
        "echo": {"muc#roomconfig_roomname": "Kitchen",
                 "muc#roomconfig_roomdesc": "Recipes"},
        "foxtrot": {"muc#roomconfig_roomname": "Hidden garden",
                    "muc#roomconfig_roomdesc": "Roses too",
                    "muc#roomconfig_publicroom": "0"},
    }
    for node, fields in rooms.items():
        await create(alice, f"{node}@{service}", "Alice", fields)
    # A locked room: entered, never configured.
    result = await alice.join(f"golf@{service}", "Alice")
    check(result[0] == "ok" and "201" in result[1], f"creating golf: {result}")

    public = [f"{n}@{service}" for n in ("alpha", "bravo", "charlie", "delta", "echo")]
    # Rooms of other partitions reach the directory through the changelog: ask until
    # every public room is listed.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        listed, rsm = await alice.directory(service)
        if listed == public:
            break
        check(set(listed) <= set(public), f"the directory lists hidden or locked rooms: {listed}")
        check(loop.time() < deadline, f"the directory lists {listed}, expected {public}")
        await asyncio.sleep(0.2)
    check(rsm is None, f"a <set/> in an answer that asked for no paging: {rsm}")

    # XEP-0059 paging.
    pages = []
    after = None
    while True:
        listed, rsm = await (alice.directory(service, max=2, after=after) if after
                             else alice.directory(service, max=2))
        check(rsm is not None and rsm["count"][0] == "5", f"page after {after}: set {rsm}")
        if not listed:
            check("first" not in rsm, f"an empty page with a first item: {rsm}")
            break
        check(rsm["first"] == (listed[0], {"index": str(len(sum(pages, [])))})
              and rsm["last"][0] == listed[-1], f"page {listed}: set {rsm}")
        pages.append(listed)
        after = listed[-1]
        check(len(pages) <= 5, f"paging does not end: {pages}")
    check(pages == [public[0:2], public[2:4], public[4:5]], f"pages of 2: {pages}")
    listed, rsm = await alice.directory(service, max=2, before="")
    check(listed == public[3:5], f"the last page (before empty) is {listed}")
    listed, rsm = await alice.directory(service, max=2, before=public[2])
    check(listed == public[0:2], f"the page before {public[2]} is {listed}")
    listed, rsm = await alice.directory(service, max=2, index=3)
    check(listed == public[3:5] and rsm["first"][1].get("index") == "3",
          f"the page at index 3 is {listed} ({rsm})")

    # Room search (jabber:iq:search with the service's form).
    form = await alice.query(service, "get", ET.Element(f"{{{NS_SEARCH}}}query"))
    x = form.find(f"{{{NS_DATA}}}x")
    check(x is not None, f"the search form is missing: {ET.tostring(form)}")
    fields = {f.get("var") for f in x.findall(f"{{{NS_DATA}}}field")}
    check({"name", "description", "subject"} <= fields, f"search form fields: {fields}")

    def jids(found):
        return [f[0] for f in found]

    found, _ = await alice.search(service, {"name": "GARDEN"})
    check(found == [(public[0], "Garden club", "Roses and tulips")],
          f"searching the name for 'GARDEN' found {found}")
    found, _ = await alice.search(service, {"description": "roses"})
    check(jids(found) == [public[0]], f"searching descriptions for 'roses' found {found}")
    found, _ = await alice.search(service, {"description": "novels"})
    check(jids(found) == [public[1]], f"searching descriptions for 'novels' found {found}")
    found, _ = await alice.search(service, {"name": "delta"})
    check(jids(found) == [public[3]], f"an unnamed room is found by its node: {found}")
    found, _ = await alice.search(service, {"name": "release", "description": "recipes"})
    check(found == [], f"two fields must both match: {found}")
    found, _ = await alice.search(service, {})
    check(jids(found) == public, f"an empty search lists {jids(found)}")
    found, rsm = await alice.search(service, {}, max=2, after=public[1])
    check(jids(found) == public[2:4] and rsm["count"][0] == "5",
          f"a search page after {public[1]}: {jids(found)} ({rsm})")
    return ("disco#items lists the 5 public rooms (not hidden or locked) with RSM paging; "
            "search by name and description words")


YESTERDAY = ["kickoff", "the quarterly budget review is on friday", "unrelated chatter"]


async def archive_yesterday(clients, service, _domain):
    alice = clients[0]
    room = f"notes@{service}"
    await create(alice, room, "Alice", {
        "muc#roomconfig_persistentroom": "1",
        "muc#roomconfig_roomname": "Release notes",
    })
    for body in YESTERDAY:
        alice.say(room, body)
    await alice.wait_for(lambda: len(alice.groupchat_bodies(room)) >= 3, "3 echoes")
    ids = alice.stanza_ids(room)
    check(sorted(ids) == sorted(YESTERDAY), f"echoes without the room's stanza-id: {ids}")
    check(len(set(ids.values())) == 3, f"stanza-ids repeat: {ids}")
    return "persistent room notes with 3 archived messages"


async def archive_today(clients, service, _domain):
    import datetime
    alice, bob = clients[0], clients[1]
    room = f"notes@{service}"
    result = await alice.join(room, "Alice")
    check(result[0] == "ok", f"alice entering notes: {result}")
    today = ["Budget approved by finance"] + [f"today-{i}" for i in range(22)] + ["budgeting"]
    for body in today:
        alice.say(room, body)
    await alice.wait_for(lambda: len(alice.groupchat_bodies(room)) >= len(today), "today's echoes")
    seen = alice.stanza_ids(room)
    check(all(b in seen for b in today), f"today's echoes lack stanza-ids: {seen}")
    everything = YESTERDAY + today
    total = len(everything)

    form = await bob.query(room, "get", ET.Element(f"{{{NS_MAM}}}query"))
    fields = [f.get("var") for f in form.iter(f"{{{NS_DATA}}}field")]
    check(FULLTEXT in fields, f"the archive's query form does not offer full-text search: {fields}")

    # Full text: case-insensitive, whole words, every word.
    found, fin, _ = await bob.mam(room, {FULLTEXT: "BUDGET"})
    bodies = [r[3] for r in found]
    check(bodies == ["the quarterly budget review is on friday", "Budget approved by finance"],
          f"'budget' found {bodies}")
    now = datetime.datetime.now(datetime.timezone.utc)
    stamps = [datetime.datetime.fromisoformat(r[1].replace("Z", "+00:00")) for r in found]
    check(now - stamps[0] > datetime.timedelta(hours=20),
          f"the budget review was said yesterday, but is stamped {found[0][1]} (now {now})")
    check(now - stamps[1] < datetime.timedelta(hours=1),
          f"the approval was said today, but is stamped {found[1][1]}")
    check(all(r[2] == f"{room}/Alice" for r in found), f"results not from the occupant: {found}")
    check(found[1][0] == seen["Budget approved by finance"],
          f"the result id {found[1][0]} is not the stanza-id occupants saw")
    check(fin.get("complete") == "true", "a one-page result is complete")
    found, _, _ = await bob.mam(room, {FULLTEXT: "budget friday"})
    check([r[3] for r in found] == [YESTERDAY[1]], f"'budget friday' found {found}")
    found, _, _ = await bob.mam(room, {FULLTEXT: "budg"})
    check(found == [], f"'budg' matched parts of words: {found}")
    found, _, _ = await bob.mam(room, {FULLTEXT: "\" OR * -(budget"})
    check(all("budget" in (r[3] or "").lower() for r in found), f"hostile text: {found}")

    # Dates and the sender.
    noon_ago = (now - datetime.timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    found, _, _ = await bob.mam(room, {"end": noon_ago})
    check([r[3] for r in found] == YESTERDAY, f"messages until 12 hours ago: {found}")
    found, _, _ = await bob.mam(room, {"start": noon_ago, FULLTEXT: "budget"})
    check([r[3] for r in found] == ["Budget approved by finance"], f"since 12 hours ago: {found}")
    found, _, rsm = await bob.mam(room, {"with": f"{room}/Alice"}, max=0)
    check(found == [] and rsm["count"][0] == str(total), f"count of alice's messages: {rsm}")
    found, _, _ = await bob.mam(room, {"with": f"{room}/Nobody"})
    check(found == [], f"messages of nobody: {found}")

    # Paging through the whole transcript.
    pages = []
    found, fin, rsm = await bob.mam(room, max=10)
    pages.append(found)
    check(rsm["count"][0] == str(total) and rsm["first"][1].get("index") == "0",
          f"first page: {rsm}")
    check(fin.get("complete") != "true", "the first page is not the last")
    while fin.get("complete") != "true":
        found, fin, rsm = await bob.mam(room, max=10, after=rsm["last"][0])
        pages.append(found)
        check(len(pages) <= 4, "paging does not end")
    got = [r[3] for page in pages for r in page]
    check(got == everything, f"paged transcript {got}")
    check(rsm["first"][1].get("index") == "20", f"last page index: {rsm}")
    found, fin, rsm = await bob.mam(room, max=5, before="")
    check([r[3] for r in found] == everything[-5:], f"last page: {found}")
    check(rsm["first"][1].get("index") == str(total - 5), f"last page index {rsm}")
    found, fin, rsm = await bob.mam(room, max=5, before=rsm["first"][0])
    check([r[3] for r in found] == everything[-10:-5], f"page before the last: {found}")
    return (f"transcript search: full text over {total} messages (yesterday's found), dates, "
            "sender, paging")


async def outage_before(clients, service, _domain):
    alice = clients[0]
    room = f"ops@{service}"
    await create(alice, room, "Alice", {"muc#roomconfig_persistentroom": "1"})
    for i in range(5):
        alice.say(room, f"before-{i}")
    await alice.wait_for(lambda: len(alice.groupchat_bodies(room)) >= 5, "5 echoes")
    return "persistent room ops with 5 messages"


async def outage_during(clients, service, _domain):
    alice, bob = clients[0], clients[1]
    room = f"ops@{service}"
    for c, nick in ((alice, "Alice"), (bob, "Bob")):
        result = await c.join(room, nick)
        check(result[0] == "ok", f"{nick} entering ops while the database is down: {result}")
    # One after the other (each echoed before the next), so the room's order is known.
    for i in range(10):
        sender = alice if i % 2 == 0 else bob
        sender.say(room, f"during-{i}")
        await sender.wait_for(lambda s=sender, i=i: f"during-{i}" in s.groupchat_bodies(room),
                              f"the echo of during-{i}")
    want = [f"during-{i}" for i in range(10)]
    for c in (alice, bob):
        await c.wait_for(lambda c=c: all(b in c.groupchat_bodies(room) for b in want),
                         "the messages said during the outage")
        bodies = c.groupchat_bodies(room)
        check(all(bodies.count(b) == 1 for b in want), f"duplicates: {bodies}")
    try:
        await bob.mam(room)
        raise Failed("an archive query succeeded while the archive database was down")
    except IqError as e:
        check(e.iq["error"]["type"] == "wait" and e.condition == "internal-server-error",
              f"archive query during the outage: {e.iq['error']}")
    return "rooms work during the outage; archive queries get a wait error"


async def outage_after(clients, service, _domain):
    bob = clients[1]
    room = f"ops@{service}"
    want = [f"before-{i}" for i in range(5)] + [f"during-{i}" for i in range(10)]
    found, fin, rsm = await bob.mam(room)
    check([r[3] for r in found] == want, f"the archive after the outage: {found}")
    check(fin.get("complete") == "true", "complete")
    return "the archive caught up: 15 messages in order"


SCENARIOS = {
    "basic": (basic, 4),
    "persist-create": (persist_create, 1),
    "persist-check": (persist_check, 2),
    "history-2": (history_live, 2),
    "access": (access, 2),
    "moderation": (moderation, 3),
    "fan-out-50": (fan_out_50, 50),
    "direct-invite": (direct_invite, 3),
    "directory": (directory, 1),
    "archive-yesterday": (archive_yesterday, 1),
    "archive-today": (archive_today, 2),
    "outage-before": (outage_before, 1),
    "outage-during": (outage_during, 2),
    "outage-after": (outage_after, 2),
}


async def main(host, port, service, scenario):
    run, users = SCENARIOS[scenario]
    domain = service.split(".", 1)[1]
    clients = []
    try:
        results = await asyncio.gather(
            *(connect(host, port, domain, n) for n in range(1, users + 1)),
            return_exceptions=True)
        clients = [r for r in results if isinstance(r, Client)]
        for r in results:
            if isinstance(r, BaseException):
                raise r
        # Scenarios index clients by user number; pad the ones not needed.
        while len(clients) < 4:
            clients.append(None)
        text = await run(clients, service, domain)
        print(f"OK: {text}")
        status = 0
    except (Failed, IqError) as e:
        print(f"FAILED: {e}")
        status = 1
    for c in clients:
        if c is not None:
            c.disconnect()
    await asyncio.sleep(0.2)
    return status


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[4] not in SCENARIOS:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

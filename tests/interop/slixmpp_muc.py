#!/usr/bin/env python3
"""Chat rooms (XEP-0045) with slixmpp against `imbus serve`.

Usage:
  slixmpp_muc.py HOST PORT SERVICE SCENARIO

Users are userN@<domain of SERVICE without its first label> with password Pw-userN
(user1 … user4, as many as the scenario needs).

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


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
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
    client = Client(f"user{n}@{domain}/muc", f"Pw-user{n}")
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


SCENARIOS = {
    "basic": (basic, 4),
    "persist-create": (persist_create, 1),
    "persist-check": (persist_check, 2),
    "history-2": (history_live, 2),
    "access": (access, 2),
    "moderation": (moderation, 3),
}


async def main(host, port, service, scenario):
    run, users = SCENARIOS[scenario]
    domain = service.split(".", 1)[1]
    clients = []
    try:
        for n in range(1, users + 1):
            clients.append(await connect(host, port, domain, n))
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

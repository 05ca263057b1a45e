#!/usr/bin/env python3
"""The router's message delivery rules, driven by slixmpp against a running server.

Each scenario logs in its own accounts (`<name>@DOMAIN`, password `Pw-<name>`; the
`users` command lists them), checks exactly what every client receives — every stanza
that arrives is counted, nothing is deduplicated — and prints `PASS <scenario>` or
`FAIL <scenario>: <what differed>`. The exit code is 0 only when every scenario passed.

Absence is checked with barriers, not with waiting: after the stanzas under test, their
sender sends a `headline` marker to each full JID concerned. The marker follows the same
path (the sender's partition, then the recipient's) and lands on the same delivery
partition, so once it arrived, anything the stanzas under test produced for that client
has arrived before it. Steps whose order the server does not guarantee (a user's own
stanza and a contact's message take different topics) wait for a visible effect of the
first (a reply received, a presence seen, an IQ result) before the second.

Scenarios (`all` runs the first eleven, in this order):
  forking       a chat or normal message to a bare JID reaches every available resource
  lock          after a reply from one resource, that contact's messages go there only
  unlock        the lock ends when that resource goes unavailable or disconnects
  carbons       XEP-0280 received/sent copies for the resources that enabled carbons
  fulljid       a message to a full JID reaches that resource only; a new sign-in on a
                resource replaces the session there and is served
  order         1,000 messages arrive in order, none lost, none repeated
  offline       messages for a user with no available resource arrive at the next
                available presence, in order, with a XEP-0203 delay stamp, once
  quota         past the offline quota (--quota) the sender gets resource-constraint
  multicast     XEP-0033 to 50 recipients, half online, half offline; advertised in disco
  blocking      XEP-0191: nothing from a blocked contact, errors as the XEP says
  presence-stays-on  (part of `all`) presence still works: the switches are not global
  im-off        (server with im.enabled = false) messages are refused with an error
  presence-off  (server with presence.enabled = false) presence is refused with an error;
                chat goes on, to every signed-in client

Every client connects from its own loopback address (127.NET.x.y, --net), because the
server limits new connections per source address.

Usage:
  slixmpp_im.py users SCENARIO...
  slixmpp_im.py [--quota N] [--net N] HOST PORT DOMAIN SCENARIO...
"""

import argparse
import asyncio
import collections
import datetime
import os
import re
import ssl
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

# The time the caller allows the run (IMBUS_INTEROP_TIMEOUT); a single wait for an
# expected stanza gives up after at most 30 s of it, failing its scenario.
TIMEOUT = float(os.environ.get("IMBUS_INTEROP_TIMEOUT", "110"))
WAIT = min(30.0, TIMEOUT)
# IMBUS_INTEROP_VERBOSE=1: what every client received, for passing scenarios too.
VERBOSE = os.environ.get("IMBUS_INTEROP_VERBOSE") == "1"

NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_HINTS = "urn:xmpp:hints"
NS_ADDRESS = "http://jabber.org/protocol/address"
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PING = "urn:xmpp:ping"
NS_ROSTER = "jabber:iq:roster"

ORDER_COUNT = 1000
OFFLINE_COUNT = 20
MULTICAST_RECIPIENTS = 50


def q(ns, name):
    return f"{{{ns}}}{name}"


# A received <presence/>: type (`available` when absent), from, error (see
# describe_error) and show.
Pres = collections.namedtuple("Pres", "type frm error show")


class Timeout(Exception):
    pass


class Failed(Exception):
    pass


def describe_error(el):
    """(condition, type, text) of the <error/> child of a stanza element, or None."""
    err = el.find(q(NS_CLIENT, "error"))
    if err is None:
        return None
    condition, text = None, None
    for child in err:
        if child.tag == q(NS_STANZAS, "text"):
            text = child.text
        elif child.tag.startswith("{" + NS_STANZAS + "}"):
            condition = child.tag.split("}", 1)[1]
    return condition, err.get("type"), text, err


class Msg:
    """A received <message/>, classified."""

    def __init__(self, el):
        self.el = el
        self.type = el.get("type", "normal")
        self.id = el.get("id")
        self.frm = el.get("from", "")
        self.to = el.get("to", "")
        body = el.find(q(NS_CLIENT, "body"))
        self.body = body.text if body is not None else None
        self.error = describe_error(el) if self.type == "error" else None
        self.carbon = None
        self.inner = None
        for direction in ("received", "sent"):
            wrapper = el.find(q(NS_CARBONS, direction))
            if wrapper is not None:
                self.carbon = direction
                inner = wrapper.find(f"{q(NS_FORWARD, 'forwarded')}/{q(NS_CLIENT, 'message')}")
                self.inner = Msg(inner) if inner is not None else None
        delay = el.find(q(NS_DELAY, "delay"))
        self.delay = (delay.get("stamp"), delay.get("from")) if delay is not None else None
        addresses = el.find(q(NS_ADDRESS, "addresses"))
        self.addresses = (
            [(a.get("type"), a.get("jid"), a.get("delivered")) for a in addresses]
            if addresses is not None
            else None
        )

    @property
    def plain(self):
        return self.type != "error" and self.carbon is None

    def __repr__(self):
        if self.carbon:
            inner = self.inner.body if self.inner else None
            return f"<{self.carbon}-carbon of {inner!r} from {self.frm}>"
        if self.error:
            return f"<error {self.error[0]} for {self.body!r} from {self.frm}>"
        return f"<{self.type} {self.body!r} from {self.frm}>"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, source):
        super().__init__(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.source = source
        self.messages = []
        self.presences = []
        self.pushes = []
        # Subscription requests are answered by the scenarios, not by slixmpp.
        self.auto_authorize = None
        self.auto_subscribe = False
        self.started = asyncio.Event()
        self.login_failed = None
        self.closed = False
        self.add_event_handler("session_start", lambda _: self.started.set())
        self.stream_errors = []
        self.add_event_handler("stream_error", lambda e: self.stream_errors.append(e["condition"]))
        self.add_event_handler("disconnected", lambda _: setattr(self, "closed", True))
        self.add_event_handler("failed_auth", self._failed)
        self.add_event_handler("connection_failed", self._failed)
        self.register_handler(
            Callback("imbus-messages", MatchXPath(f"{{{NS_CLIENT}}}message"), self._on_message)
        )
        self.register_handler(
            Callback("imbus-presence", MatchXPath(f"{{{NS_CLIENT}}}presence"), self._on_presence)
        )
        for name in ("block", "unblock"):
            self.register_handler(
                Callback(
                    f"imbus-{name}-push",
                    MatchXPath(f"{{{NS_CLIENT}}}iq/{{{NS_BLOCKING}}}{name}"),
                    self._on_push,
                )
            )

    async def _attempt_connection(self, host, port, tls, server_hostname):
        # slixmpp's own connection attempt, from this client's source address (STARTTLS
        # only: `tls` is never set with direct TLS and plaintext off).
        self.event_when_connected = "connected"
        try:
            await self.loop.create_connection(
                lambda: self, host, port, local_addr=(self.source, 0)
            )
            return True
        except OSError as e:
            self.event("connection_failed", e)
            return False

    def _failed(self, reason):
        self.login_failed = str(reason)

    def _on_message(self, stanza):
        self.messages.append(Msg(stanza.xml))

    def _on_presence(self, stanza):
        el = stanza.xml
        show = el.find(q(NS_CLIENT, "show"))
        self.presences.append(Pres(el.get("type", "available"), el.get("from", ""),
                                   describe_error(el), show.text if show is not None else None))

    def _on_push(self, iq):
        if iq["type"] == "set":
            self.pushes.append(iq.xml[0])
            iq.reply().send()

    # ----- what arrived -----

    @property
    def full(self):
        return self.boundjid.full

    @property
    def bare(self):
        return self.boundjid.bare

    def plain(self, prefix=""):
        """Bodies of the plain messages (no errors, no carbons, no barriers) in arrival
        order, optionally only those starting with `prefix`."""
        return [
            m.body
            for m in self.messages
            if m.plain and m.body is not None
            and not m.body.startswith("barrier-")
            and m.body.startswith(prefix)
        ]

    def carbons(self):
        return [m for m in self.messages if m.carbon]

    def errors(self):
        return [m for m in self.messages if m.type == "error"]

    def presence_errors(self):
        return [p for p in self.presences if p.type == "error"]

    def saw_available(self, full, since=0):
        """Whether the last presence from `full` (among those after the first `since`)
        is available."""
        last = [p.type for p in self.presences[since:] if p.frm == full]
        return bool(last) and last[-1] not in ("unavailable", "error")

    def saw_unavailable(self, full):
        last = [p.type for p in self.presences if p.frm == full]
        return bool(last) and last[-1] == "unavailable"

    # ----- sending -----

    def say(self, to, body, mtype="chat", extra=()):
        msg = self.make_message(mto=to, mbody=body, mtype=mtype)
        # The body doubles as the id: error replies carry the id, not always the body.
        msg["id"] = body
        for child in extra:
            msg.xml.append(child)
        msg.send()

    async def iq(self, itype, to, payload_xml):
        iq = self.make_iq(ito=to, itype=itype)
        iq.xml.append(ET.fromstring(payload_xml))
        return await iq.send(timeout=WAIT)


class Run:
    """One scenario: its clients, its checks."""

    def __init__(self, suite, name):
        self.suite = suite
        self.name = name
        self.clients = []
        self.failures = []
        self.barriers = 0

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)
        return ok

    def expect(self, got, expected, what):
        """Exact comparison, with both sides in the failure text."""
        return self.check(got == expected, f"{what}: got {got!r}, expected {expected!r}")

    def expect_counts(self, got, expected, what):
        """Same multiset: order aside, every body as many times as expected."""
        g, e = collections.Counter(got), collections.Counter(expected)
        return self.check(
            g == e, f"{what}: got {sorted(g.items())!r}, expected {sorted(e.items())!r}"
        )

    async def until(self, predicate, what, timeout=WAIT):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise Timeout(what)
            await asyncio.sleep(0.02)

    async def login(self, node, resource, available=True, priority=None):
        """Logs in `node@domain/resource`; with `available`, sends initial presence and
        waits until the server sent it back (the router has processed it)."""
        jid = f"{node}@{self.suite.domain}/{resource}"
        client = Client(jid, f"Pw-{node}", self.suite.next_source())
        self.clients.append(client)
        client.connect(self.suite.host, self.suite.port)
        await self.until(
            lambda: client.started.is_set() or client.login_failed is not None,
            f"login of {jid}",
        )
        if client.login_failed is not None:
            raise Failed(f"login of {jid} failed: {client.login_failed}")
        if available:
            await self.available(client, priority)
        return client

    async def available(self, client, priority=None):
        seen = len(client.presences)
        client.send_presence(ppriority=priority)
        await self.until(
            lambda: client.saw_available(client.full, seen),
            f"{client.full} sees its own presence",
        )

    async def resources(self, node, names):
        """Logs in several resources of one account, all available, each seeing the
        others available."""
        clients = [await self.login(node, r) for r in names]
        await self.see_each_other(clients)
        return clients

    async def see_each_other(self, clients):
        for c in clients:
            for other in clients:
                await self.until(
                    lambda c=c, o=other: c.saw_available(o.full),
                    f"{c.full} sees {other.full} available",
                )

    async def barrier(self, sender, targets):
        """A headline marker from `sender` to each target's full JID, awaited."""
        self.barriers += 1
        tag = f"barrier-{self.name}-{self.barriers}"
        for t in targets:
            sender.say(t.full, tag, mtype="headline")
        for t in targets:
            await self.until(
                lambda t=t: any(m.body == tag for m in t.messages),
                f"{t.full} receives the marker {tag} from {sender.full}",
            )
        return tag

    async def close(self, client):
        if client.closed:
            return
        client.closed = True
        client.disconnect()
        try:
            await asyncio.wait_for(client.disconnected, 10)
        except asyncio.TimeoutError:
            pass

    async def close_all(self):
        await asyncio.gather(*(self.close(c) for c in self.clients))


class Suite:
    def __init__(self, host, port, domain, quota, net):
        self.host = host
        self.port = int(port)
        self.domain = domain
        self.quota = quota
        self.net = net
        self.sources = 0

    def next_source(self):
        n = self.sources
        self.sources += 1
        return f"127.{self.net}.{n // 250}.{n % 250 + 1}"

    def jid(self, node):
        return f"{node}@{self.domain}"


# ----- scenarios -----


async def forking(r):
    u1, u2 = await r.resources("fork-u", ["r1", "r2"])
    x = await r.login("fork-x", "x")
    x.say(u1.bare, "fork-chat", "chat")
    x.say(u1.bare, "fork-normal", "normal")
    x.say(u1.bare, "fork-untyped", None)
    await r.barrier(x, [u1, u2])
    expected = ["fork-chat", "fork-normal", "fork-untyped"]
    r.expect(u1.plain(), expected, "r1 (available) gets every message to the bare JID once")
    r.expect(u2.plain(), expected, "r2 (available) gets every message to the bare JID once")
    r.expect(x.errors(), [], "the sender gets no error")


async def lock(r):
    u1, u2 = await r.resources("lock-u", ["r1", "r2"])
    x = await r.login("lock-x", "x")
    y = await r.login("lock-y", "y")
    x.say(u1.bare, "lock-before")
    await r.until(lambda: "lock-before" in u1.plain() and "lock-before" in u2.plain(),
                  "the first message forks to r1 and r2")
    u1.say(x.bare, "lock-reply")
    await r.until(lambda: "lock-reply" in x.plain(), "the contact gets the reply")
    for i in range(3):
        x.say(u1.bare, f"lock-after-{i}")
    x.say(u1.bare, "lock-after-normal", "normal")
    # A message to a full JID is never redirected by the lock.
    x.say(u2.full, "lock-to-r2")
    # Another contact's conversation is not locked.
    y.say(u1.bare, "lock-other-contact")
    await r.barrier(x, [u1, u2])
    await r.barrier(y, [u1, u2])
    after = [f"lock-after-{i}" for i in range(3)] + ["lock-after-normal"]
    r.expect_counts(
        u1.plain(), ["lock-before"] + after + ["lock-other-contact"],
        "r1 (replied) gets the contact's messages once each",
    )
    r.expect_counts(
        u2.plain(), ["lock-before", "lock-to-r2", "lock-other-contact"],
        "r2 gets none of the locked conversation, but its full-JID message and the "
        "other contact's",
    )
    r.expect(x.plain(), ["lock-reply"], "the contact gets the reply once")
    r.expect(x.errors() + y.errors() + u1.errors(), [], "nobody gets an error")


async def unlock(r):
    u1, u2, u3 = await r.resources("unlock-u", ["r1", "r2", "r3"])
    x = await r.login("unlock-x", "x")
    x.say(u1.bare, "unlock-fork")
    await r.until(lambda: all("unlock-fork" in c.plain() for c in (u1, u2, u3)),
                  "the first message forks to all three")
    u1.say(x.bare, "unlock-reply-1")
    await r.until(lambda: "unlock-reply-1" in x.plain(), "the contact gets the reply")
    x.say(u1.bare, "unlock-locked")
    await r.barrier(x, [u1, u2, u3])
    r.expect(u2.plain() + u3.plain(), ["unlock-fork", "unlock-fork"],
             "while locked to r1, r2 and r3 get nothing more")

    # r1 goes unavailable (still connected): forking again, without r1.
    u1.send_presence(ptype="unavailable")
    for c in (u2, u3):
        await r.until(lambda c=c: c.saw_unavailable(u1.full), f"{c.full} sees r1 leave")
    x.say(u1.bare, "unlock-after-unavailable")
    await r.barrier(x, [u1, u2, u3])
    # r1 back: the lock is not restored.
    await r.available(u1)
    await r.see_each_other([u1, u2, u3])
    x.say(u1.bare, "unlock-after-return")
    await r.barrier(x, [u1, u2, u3])

    # Locked to r1 again; r1 goes unavailable and comes back before the contact writes:
    # the lock is gone all the same.
    u1.say(x.bare, "unlock-reply-2")
    await r.until(lambda: "unlock-reply-2" in x.plain(), "the contact gets the second reply")
    x.say(u1.bare, "unlock-locked-2")
    await r.barrier(x, [u1, u2, u3])
    u1.send_presence(ptype="unavailable")
    for c in (u2, u3):
        await r.until(lambda c=c: c.saw_unavailable(u1.full), f"{c.full} sees r1 leave")
    await r.available(u1)
    await r.see_each_other([u1, u2, u3])
    x.say(u1.bare, "unlock-after-flap")
    await r.barrier(x, [u1, u2, u3])

    # Locked to r2, which then disconnects: forking again to r1 and r3.
    u2.say(x.bare, "unlock-reply-3")
    await r.until(lambda: "unlock-reply-3" in x.plain(), "the contact gets the third reply")
    x.say(u1.bare, "unlock-locked-3")
    await r.barrier(x, [u1, u2, u3])
    await r.close(u2)
    for c in (u1, u3):
        await r.until(lambda c=c: c.saw_unavailable(u2.full), f"{c.full} sees r2 disconnect")
    x.say(u1.bare, "unlock-after-disconnect")
    await r.barrier(x, [u1, u3])

    # Locked to r3, which disconnects and signs in again (same resource) before the
    # contact writes: no lock either.
    u3.say(x.bare, "unlock-reply-4")
    await r.until(lambda: "unlock-reply-4" in x.plain(), "the contact gets the fourth reply")
    x.say(u1.bare, "unlock-locked-4")
    await r.barrier(x, [u1, u3])
    await r.close(u3)
    await r.until(lambda: u1.saw_unavailable(u3.full), "r1 sees r3 disconnect")
    u3b = await r.login("unlock-u", "r3")
    await r.see_each_other([u1, u3b])
    x.say(u1.bare, "unlock-after-reconnect")
    await r.barrier(x, [u1, u3b])

    r.expect(u1.plain(), ["unlock-fork", "unlock-locked", "unlock-after-return",
                          "unlock-locked-2", "unlock-after-flap", "unlock-after-disconnect",
                          "unlock-after-reconnect"], "r1")
    r.expect(u2.plain(), ["unlock-fork", "unlock-after-unavailable", "unlock-after-return",
                          "unlock-after-flap", "unlock-locked-3"], "r2")
    r.expect(u3.plain(), ["unlock-fork", "unlock-after-unavailable", "unlock-after-return",
                          "unlock-after-flap", "unlock-after-disconnect", "unlock-locked-4"],
             "r3")
    r.expect(u3b.plain(), ["unlock-after-reconnect"], "r3 signed in again")
    r.expect(x.errors(), [], "the contact gets no error")


def carbon_summary(client):
    """(direction, inner body, inner from, inner to) of each carbon, wrapper checked."""
    out = []
    for m in client.carbons():
        inner = m.inner
        out.append((m.carbon, inner.body if inner else None,
                    inner.frm if inner else None, inner.to if inner else None,
                    m.frm == client.bare))
    return out


async def carbons(r):
    u1, u2, u3 = await r.resources("carb-u", ["r1", "r2", "r3"])
    x = await r.login("carb-x", "x")
    for c in (u1, u2):
        await c.iq("set", None, f"<enable xmlns='{NS_CARBONS}'/>")
    private = [ET.Element(q(NS_CARBONS, "private"))]
    no_copy = [ET.Element(q(NS_HINTS, "no-copy"))]

    # Received, to a full JID: copies for r1 and r2.
    x.say(u3.full, "carb-in-full")
    # Sent from r3: copies for r1 and r2 (locks the conversation to r3).
    u3.say(x.bare, "carb-out-r3")
    await r.until(lambda: "carb-out-r3" in x.plain(), "the contact gets r3's message")
    # Sent from r1 (locks the conversation to r1): a copy for r2 only.
    u1.say(x.full, "carb-out-r1")
    await r.until(lambda: "carb-out-r1" in x.plain(), "the contact gets r1's message")
    # Received on the bare JID, locked to r1: a copy for r2. (Processed before r3 speaks
    # again, which would lock the conversation to r3.)
    x.say(u1.bare, "carb-in-locked")
    await r.barrier(x, [u1, u2, u3])
    # <private/> (XEP-0280) or <no-copy/> (XEP-0334): no copies either way.
    x.say(u3.full, "carb-in-private", extra=private)
    x.say(u3.full, "carb-in-no-copy", extra=no_copy)
    u3.say(x.bare, "carb-out-private", extra=private)
    u3.say(x.bare, "carb-out-no-copy", extra=no_copy)
    await r.until(lambda: "carb-out-no-copy" in x.plain(), "the contact gets the last one")
    # Headlines are not copied.
    x.say(u3.full, "carb-in-headline", mtype="headline")
    await r.barrier(x, [u1, u2, u3])
    # r2 disables carbons: copies for r1 only.
    await u2.iq("set", None, f"<disable xmlns='{NS_CARBONS}'/>")
    x.say(u3.full, "carb-in-after-disable")
    await r.barrier(x, [u1, u2, u3])

    xf, f3, f1 = x.full, u3.full, u1.full
    r.expect_counts(carbon_summary(u1), [
        ("received", "carb-in-full", xf, f3, True),
        ("sent", "carb-out-r3", f3, x.bare, True),
        ("received", "carb-in-after-disable", xf, f3, True),
    ], "r1's carbons (direction, body, from, to, wrapper from the own bare JID)")
    r.expect_counts(carbon_summary(u2), [
        ("received", "carb-in-full", xf, f3, True),
        ("sent", "carb-out-r3", f3, x.bare, True),
        ("sent", "carb-out-r1", f1, xf, True),
        ("received", "carb-in-locked", xf, u1.bare, True),
    ], "r2's carbons")
    r.expect(carbon_summary(u3), [], "r3 (carbons never enabled) gets no carbons")
    r.expect(u1.plain(), ["carb-in-locked"], "r1's messages")
    r.expect(u2.plain(), [], "r2's messages")
    r.expect(u3.plain(), ["carb-in-full", "carb-in-private", "carb-in-no-copy",
                          "carb-in-headline", "carb-in-after-disable"], "r3's messages")
    r.expect_counts(x.plain(), ["carb-out-r3", "carb-out-r1", "carb-out-private",
                                "carb-out-no-copy"], "the contact's messages")
    r.expect(x.errors() + u1.errors() + u3.errors(), [], "nobody gets an error")


async def fulljid(r):
    u1, u2 = await r.resources("full-u", ["r1", "r2"])
    x = await r.login("full-x", "x")
    x.say(u1.full, "full-to-r1")
    x.say(u2.full, "full-to-r2-normal", "normal")
    x.say(u1.full, "full-to-r1-headline", "headline")
    # A full JID without a session: handled as the bare JID (RFC 6121 §8.5.3.2.1).
    x.say(f"{u1.bare}/gone", "full-to-unbound")
    await r.barrier(x, [u1, u2])
    r.expect(u1.plain(), ["full-to-r1", "full-to-r1-headline", "full-to-unbound"], "r1")
    r.expect(u2.plain(), ["full-to-r2-normal", "full-to-unbound"], "r2")

    # A new sign-in on r1 replaces the session there (the old one ends with conflict):
    # the full JID names the new session, which is served like any other (its presence
    # counts, its requests are answered).
    r1b = await r.login("full-u", "r1")
    await r.until(lambda: u1.closed, "the replaced session is closed")
    r.expect(u1.stream_errors, ["conflict"], "the replaced session's stream error")
    await r.see_each_other([r1b, u2])
    await r1b.iq("get", None, f"<query xmlns='{NS_ROSTER}'/>")
    x.say(r1b.full, "full-to-new-r1")
    x.say(u1.bare, "full-to-bare-after-replace")
    await r.barrier(x, [r1b, u2])
    r.expect(r1b.plain(), ["full-to-new-r1", "full-to-bare-after-replace"],
             "r1 signed in again")
    r.expect(u2.plain()[2:], ["full-to-bare-after-replace"], "r2 after the replacement")
    r.expect(x.errors(), [], "the sender gets no error")


async def order(r):
    b = await r.login("order-b", "b")
    a = await r.login("order-a", "a")
    expected = [f"order-{i}" for i in range(ORDER_COUNT)]
    for body in expected:
        a.say(b.bare, body)
    await r.until(lambda: len(b.plain()) >= ORDER_COUNT, f"{ORDER_COUNT} messages",
                  timeout=max(WAIT, 60))
    await r.barrier(a, [b])
    got = b.plain()
    if not r.expect(len(got), ORDER_COUNT, "number of messages received"):
        c = collections.Counter(got)
        r.check(False, f"missing: {[e for e in expected if e not in c][:20]}, "
                       f"repeated: {[k for k, n in c.items() if n > 1][:20]}")
    elif got != expected:
        first = next(i for i, (g, e) in enumerate(zip(got, expected)) if g != e)
        r.check(False, f"out of order from position {first}: {got[first:first + 5]}")
    r.expect(a.errors(), [], "the sender gets no error")


# XEP-0082 DateTime: CCYY-MM-DDThh:mm:ss[.sss]TZD.
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def undelayed(client, prefix, domain):
    """The messages starting with `prefix` without a XEP-0203 delay from the server with a
    well-formed stamp, and, when they all have one, those whose stamp is earlier than the
    one before (stored in order, so stamped in order)."""
    mine = [m for m in client.messages if m.plain and m.body and m.body.startswith(prefix)]
    bad = [m for m in mine
           if m.delay is None or m.delay[1] != domain or not STAMP.match(m.delay[0] or "")]
    if bad:
        return bad
    stamps = [datetime.datetime.fromisoformat(m.delay[0].replace("Z", "+00:00")) for m in mine]
    return [m for m, before, stamp in zip(mine[1:], stamps, stamps[1:]) if stamp < before]


async def offline(r):
    a = await r.login("off-a", "a")
    # Nobody signed in: stored.
    half = OFFLINE_COUNT // 2
    for i in range(half):
        a.say(r.suite.jid("off-b"), f"offline-{i}")
    # Signed in but not available (no presence yet): stored too.
    b1 = await r.login("off-b", "b1", available=False)
    await b1.iq("get", r.suite.domain, f"<ping xmlns='{NS_PING}'/>")
    for i in range(half, OFFLINE_COUNT):
        a.say(b1.bare, f"offline-{i}")
    await r.barrier(a, [b1])
    r.expect(b1.plain(), [], "nothing reaches a session before its available presence")
    # Available with a negative priority: still not a target (RFC 6121 §8.5.2.1.1).
    await r.available(b1, priority=-1)
    await r.barrier(a, [b1])
    r.expect(b1.plain(), [], "nothing reaches a resource with a negative priority")
    # Available with priority 0: everything, in order, stamped.
    await r.available(b1, priority=0)
    await r.until(lambda: len(b1.plain()) >= OFFLINE_COUNT, "offline messages delivered")
    await r.barrier(a, [b1])
    expected = [f"offline-{i}" for i in range(OFFLINE_COUNT)]
    r.expect(b1.plain(), expected, "offline messages, in order, once each")
    bad = undelayed(b1, "offline-", r.suite.domain)
    r.expect(bad, [], "every offline message carries a XEP-0203 delay from the server")
    # Delivered means gone: the next sign-in gets nothing again.
    await r.close(b1)
    b2 = await r.login("off-b", "b2")
    await r.barrier(a, [b2])
    r.expect(b2.plain(), [], "a later sign-in gets the offline messages no more")
    r.expect(a.errors(), [], "the sender gets no error")


async def quota(r):
    limit = r.suite.quota
    extra = 3
    a = await r.login("quota-a", "a")
    to = r.suite.jid("quota-b")
    for i in range(limit + extra):
        a.say(to, f"quota-{i}")
    await r.until(lambda: len(a.errors()) >= extra, f"{extra} errors for the sender")
    b = await r.login("quota-b", "b")
    await r.until(lambda: len(b.plain()) >= limit, "the stored messages delivered")
    await r.barrier(a, [b])
    await r.barrier(b, [a])
    refused = [(m.id, m.body, m.error[0] if m.error else None, m.error[1] if m.error else None)
               for m in a.errors()]
    r.expect(refused, [(f"quota-{i}", f"quota-{i}", "resource-constraint", "wait")
                       for i in range(limit, limit + extra)],
             "the messages past the quota bounce with resource-constraint (type wait)")
    r.expect(b.plain(), [f"quota-{i}" for i in range(limit)],
             "the stored messages arrive in order, once each")
    r.expect(undelayed(b, "quota-", r.suite.domain), [], "with a delay stamp")
    # Delivered messages free their place: offline again, the next one is stored.
    b.send_presence(ptype="unavailable")
    await b.iq("get", r.suite.domain, f"<ping xmlns='{NS_PING}'/>")
    a.say(to, "quota-after-delivery")
    await r.barrier(a, [b])
    await r.available(b)
    await r.until(lambda: "quota-after-delivery" in b.plain(), "the message stored after")
    await r.barrier(a, [b])
    r.expect(b.plain()[limit:], ["quota-after-delivery"], "the message stored after delivery")
    r.expect(len(a.errors()), extra, "no error for the message stored after delivery")


async def multicast(r):
    s = await r.login("mc-s", "s")
    info = await s.iq("get", r.suite.domain, f"<query xmlns='{NS_DISCO_INFO}'/>")
    features = [f.get("var") for f in info.xml.iter(q(NS_DISCO_INFO, "feature"))]
    r.check(NS_ADDRESS in features, f"the server advertises {NS_ADDRESS} in disco#info: "
                                    f"{features}")
    nodes = [f"mc-r{i:02}" for i in range(MULTICAST_RECIPIENTS)]
    online_nodes = nodes[0::2]
    offline_nodes = nodes[1::2]
    online = await asyncio.gather(*(r.login(n, "m") for n in online_nodes))
    kinds = {}
    addresses = ET.Element(q(NS_ADDRESS, "addresses"))
    for i, n in enumerate(nodes):
        kind = "to" if i < 17 else "cc" if i < 34 else "bcc"
        kinds[r.suite.jid(n)] = kind
        ET.SubElement(addresses, q(NS_ADDRESS, "address"),
                      {"type": kind, "jid": r.suite.jid(n)})
    s.say(r.suite.domain, "multicast-1", "normal", extra=[addresses])
    await r.until(lambda: all("multicast-1" in c.plain() for c in online),
                  "every online recipient gets the message")
    await r.barrier(s, online)
    visible = sorted((k, j, "true") for j, k in kinds.items() if k != "bcc")

    def check_copy(c):
        got = [m for m in c.messages if m.plain and m.body == "multicast-1"]
        r.expect(len(got), 1, f"{c.full}: copies")
        if got:
            m = got[0]
            r.expect(sorted(m.addresses or []), visible,
                     f"{c.full}: the addresses it sees (no bcc, each marked delivered)")
            r.expect(m.frm, s.full, f"{c.full}: from")
    for c in online:
        check_copy(c)
        r.expect(c.plain(), ["multicast-1"], f"{c.full}: messages")
    # The offline ones sign in.
    late = await asyncio.gather(*(r.login(n, "m") for n in offline_nodes))
    await r.until(lambda: all("multicast-1" in c.plain() for c in late),
                  "every offline recipient gets the message at sign-in")
    await r.barrier(s, late)
    for c in late:
        check_copy(c)
        r.expect(c.plain(), ["multicast-1"], f"{c.full}: messages")
        r.expect(undelayed(c, "multicast-", r.suite.domain), [], f"{c.full}: delay stamp")
    r.expect(s.errors(), [], "the sender gets no error")


async def subscribe(r, a, b_clients):
    """Mutual presence subscription between a's account and b's; waits until each side
    sees the other's available resources."""
    b = b_clients[0]
    for one, other in ((a, b), (b, a)):
        one.send_presence_subscription(pto=other.bare, ptype="subscribe")
        await r.until(lambda o=other, f=one.bare: any(
            p.type == "subscribe" and p.frm == f for p in o.presences),
            f"{other.full} gets {one.bare}'s subscription request")
        other.send_presence_subscription(pto=one.bare, ptype="subscribed")
    for c in b_clients:
        await r.until(lambda c=c: a.saw_available(c.full), f"{a.full} sees {c.full}")
        await r.until(lambda c=c: c.saw_available(a.full), f"{c.full} sees {a.full}")


async def blocking(r):
    u1, u2 = await r.resources("blk-u", ["r1", "r2"])
    x = await r.login("blk-x", "x")
    y = await r.login("blk-y", "y")
    await subscribe(r, x, [u1, u2])
    for c in (u1, u2):
        result = await c.iq("get", None, f"<blocklist xmlns='{NS_BLOCKING}'/>")
        r.expect([i.get("jid") for i in result.xml.iter(q(NS_BLOCKING, "item"))], [],
                 "the block list starts empty")
    x_seen = len(x.presences)
    u_seen = [len(c.presences) for c in (u1, u2)]
    await u1.iq("set", None, f"<block xmlns='{NS_BLOCKING}'><item jid='{x.bare}'/></block>")
    for c in (u1, u2):
        await r.until(lambda c=c: c.pushes, f"{c.full} gets the block push")
    # The blocked subscriber sees the user go unavailable at once.
    for c in (u1, u2):
        await r.until(lambda c=c: x.saw_unavailable(c.full), f"the blocked contact sees "
                                                             f"{c.full} go")
    # Everything from the blocked contact bounces as if the user did not exist, and its
    # presence is dropped (the bounces of the messages sent after it show it was handled).
    x.send_presence(pto=u1.full)
    x.send_presence(pshow="dnd")
    x.say(u1.bare, "blk-to-bare")
    x.say(u1.full, "blk-to-full")
    await r.until(lambda: len(x.errors()) >= 2, "the blocked contact gets two errors")
    # Nothing goes to the blocked contact: not-acceptable with <blocked/>; and no presence
    # broadcast either.
    u1.say(x.full, "blk-from-user")
    await r.until(lambda: u1.errors(), "the user gets an error")
    u2.send_presence(pshow="away")
    await r.until(lambda: u1.presences[-1].frm == u2.full and u1.presences[-1].show == "away",
                  "r1 sees r2 away")
    # Others still get through.
    y.say(u1.bare, "blk-from-other")
    result = await u2.iq("get", None, f"<blocklist xmlns='{NS_BLOCKING}'/>")
    r.expect([i.get("jid") for i in result.xml.iter(q(NS_BLOCKING, "item"))], [x.bare],
             "the block list")
    # Unblocked, the subscriber gets the user's current presence again.
    u_blocked = [c.presences[seen:] for c, seen in zip((u1, u2), u_seen)]
    await u1.iq("set", None, f"<unblock xmlns='{NS_BLOCKING}'><item jid='{x.bare}'/></unblock>")
    for c in (u1, u2):
        await r.until(lambda c=c: len(c.pushes) >= 2, f"{c.full} gets the unblock push")
    for c in (u1, u2):
        await r.until(lambda c=c: x.saw_available(c.full), f"the contact sees {c.full} again")
    x.say(u1.bare, "blk-after-unblock")
    await r.barrier(x, [u1, u2])
    await r.barrier(y, [u1, u2])
    await r.barrier(u1, [x])
    await r.barrier(u2, [x])

    r.expect([(e.id, e.error[0]) for e in x.errors()],
             [("blk-to-bare", "service-unavailable"), ("blk-to-full", "service-unavailable")],
             "the blocked contact's messages bounce with service-unavailable")
    errs = u1.errors()
    r.expect([(e.id, e.error[0], e.error[1]) for e in errs],
             [("blk-from-user", "not-acceptable", "cancel")],
             "a message to a blocked contact bounces with not-acceptable")
    if errs:
        r.check(errs[0].error[3].find(q(NS_BLOCKING_ERRORS, "blocked")) is not None,
                "the not-acceptable error carries <blocked xmlns='urn:xmpp:blocking:errors'/>")
    for c in (u1, u2):
        r.expect([(p.tag, [i.get("jid") for i in p]) for p in c.pushes],
                 [(q(NS_BLOCKING, "block"), [x.bare]), (q(NS_BLOCKING, "unblock"), [x.bare])],
                 f"{c.full}: block and unblock pushes")
        r.expect_counts(c.plain(), ["blk-from-other", "blk-after-unblock"], f"{c.full}")
    from_user = sorted((p.type, p.frm, p.show) for p in x.presences[x_seen:]
                       if p.frm.startswith(u1.bare + "/"))
    r.expect(from_user, sorted([("unavailable", u1.full, None), ("unavailable", u2.full, None),
                                ("available", u1.full, None), ("available", u2.full, "away")]),
             "the contact's presence from the user from the block on: unavailable at the "
             "block, nothing while blocked, the current presence at the unblock")
    for c, got in zip((u1, u2), u_blocked):
        r.expect([p for p in got if p.frm.startswith(x.bare)], [],
                 f"{c.full}: no presence from the blocked contact while blocked")
    r.expect(x.plain(), [], "the blocked contact gets nothing from the user")


async def presence_stays_on(r):
    # The counterpart of presence-off on a normal server: the same steps succeed.
    a = await r.login("presoff-a", "a")
    b = await r.login("presoff-b", "b")
    a.send_presence(pto=b.full)
    await r.until(lambda: b.saw_available(a.full), "directed presence arrives")
    r.expect(a.presence_errors() + b.presence_errors(), [], "no presence errors")


async def im_off(r):
    a = await r.login("imoff-a", "a")
    b = await r.login("imoff-b", "b")
    a.say(b.bare, "imoff-bare")
    a.say(b.full, "imoff-full", "normal")
    await r.until(lambda: len(a.errors()) >= 2, "the sender gets errors")
    # Presence still flows: a directed presence behind the messages is the barrier.
    a.send_presence(pto=b.full)
    await r.until(lambda: b.saw_available(a.full), "the directed presence arrives")
    errors = [(m.id, m.error[0], m.error[1], bool(m.error[2])) for m in a.errors()]
    r.expect(errors, [("imoff-bare", "service-unavailable", "cancel", True),
                      ("imoff-full", "service-unavailable", "cancel", True)],
             "each message refused with service-unavailable and a text saying why")
    r.expect(b.plain(), [], "the recipient gets nothing")


async def presence_off(r):
    a = await r.login("presoff-a", "a", available=False)
    # Written while the recipient is signed out: kept for its next sign-in.
    a.say(r.suite.jid("presoff-b"), "presoff-while-away")
    b = await r.login("presoff-b", "b", available=False)
    a.send_presence()
    await r.until(lambda: a.presence_errors(), "initial presence is answered")
    a.send_presence(pto=b.full)
    await r.until(lambda: len(a.presence_errors()) >= 2, "directed presence is answered")
    roster = await a.iq("get", None, f"<query xmlns='{NS_ROSTER}'/>")
    r.check(roster.xml.find(q(NS_ROSTER, "query")) is not None, "rosters still work")
    # Chat goes on without availability: a message to the bare JID reaches the signed-in
    # client (nobody can become available, so "available resources" would be nobody).
    a.say(b.bare, "presoff-bare")
    await r.barrier(a, [b])
    await r.until(lambda: "presoff-while-away" in b.plain(),
                  "the message written before the sign-in arrives")
    await r.barrier(a, [b])
    errors = [(p.error[0], p.error[1], bool(p.error[2])) for p in a.presence_errors()]
    r.expect(errors, [("service-unavailable", "cancel", True)] * 2,
             "each presence refused with service-unavailable and a text saying why")
    r.expect([p for p in b.presences if p.frm == a.full], [], "the recipient gets no presence")
    r.expect_counts(b.plain(), ["presoff-while-away", "presoff-bare"],
                    "the recipient gets both messages, once each")
    r.expect(a.errors(), [], "the sender gets no error")


SCENARIOS = {
    "forking": (forking, ["fork-u", "fork-x"]),
    "lock": (lock, ["lock-u", "lock-x", "lock-y"]),
    "unlock": (unlock, ["unlock-u", "unlock-x"]),
    "carbons": (carbons, ["carb-u", "carb-x"]),
    "fulljid": (fulljid, ["full-u", "full-x"]),
    "order": (order, ["order-a", "order-b"]),
    "offline": (offline, ["off-a", "off-b"]),
    "quota": (quota, ["quota-a", "quota-b"]),
    "multicast": (multicast, ["mc-s"] + [f"mc-r{i:02}" for i in range(MULTICAST_RECIPIENTS)]),
    "blocking": (blocking, ["blk-u", "blk-x", "blk-y"]),
    "presence-stays-on": (presence_stays_on, ["presoff-a", "presoff-b"]),
    "im-off": (im_off, ["imoff-a", "imoff-b"]),
    "presence-off": (presence_off, ["presoff-a", "presoff-b"]),
}
ALL = ["forking", "lock", "unlock", "carbons", "fulljid", "order", "offline", "quota",
       "multicast", "blocking", "presence-stays-on"]


def expand(names):
    out = []
    for n in names:
        for s in (ALL if n == "all" else [n]):
            if s not in SCENARIOS:
                raise SystemExit(f"unknown scenario {s!r}; known: all, {', '.join(SCENARIOS)}")
            if s not in out:
                out.append(s)
    return out


async def run(suite, names):
    failed = 0
    loop = asyncio.get_running_loop()
    for name in names:
        r = Run(suite, name)
        start = loop.time()
        try:
            await SCENARIOS[name][0](r)
        except Timeout as e:
            r.failures.append(f"timed out waiting: {e}")
        except (Failed, IqError, IqTimeout) as e:
            r.failures.append(f"{type(e).__name__}: {e}")
        except Exception as e:  # a bug in the scenario itself still fails it, visibly
            r.failures.append(f"{type(e).__name__}: {e!r}")
        if r.failures:
            failed += 1
            print(f"FAIL {name}: " + "; ".join(r.failures), flush=True)
        if r.failures or VERBOSE:
            for c in r.clients:
                print(f"  {c.boundjid.full or c.requested_jid}: messages {c.messages[:40]}"
                      f" presences {c.presences[:20]}", flush=True)
        if not r.failures:
            print(f"PASS {name} ({loop.time() - start:.1f} s)", flush=True)
        await r.close_all()
    print(f"{len(names) - failed} of {len(names)} scenarios passed", flush=True)
    return 1 if failed else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "users":
        nodes = []
        for name in expand(sys.argv[2:]):
            nodes.extend(n for n in SCENARIOS[name][1] if n not in nodes)
        print("\n".join(nodes))
        return 0
    p = argparse.ArgumentParser(usage=__doc__)
    p.add_argument("--quota", type=int, default=1000, help="the server's offline.quota")
    p.add_argument("--net", type=int, default=1, help="source addresses 127.NET.x.y")
    p.add_argument("host")
    p.add_argument("port")
    p.add_argument("domain")
    p.add_argument("scenarios", nargs="+")
    args = p.parse_args()
    names = expand(args.scenarios)
    suite = Suite(args.host, args.port, args.domain, args.quota, args.net)
    return asyncio.run(run(suite, names))


if __name__ == "__main__":
    sys.exit(main())

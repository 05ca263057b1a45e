#!/usr/bin/env python3
"""Interop check with slixmpp (a third-party XMPP client library).

Two users log in over STARTTLS, exchange roster subscriptions (alice asks, bob
approves and asks back, alice approves), see each other's presence, exchange a chat
message, run disco#info and ping against the server, and alice sees bob go offline.

Usage: slixmpp_roster.py HOST PORT ALICE_JID ALICE_PW BOB_JID BOB_PW
Exit code 0 when every step was observed; 1 with the missing steps otherwise.
"""

import asyncio
import logging
import ssl
import sys

import slixmpp

TIMEOUT = 20.0


def insecure(client):
    # The test server runs on a freshly generated self-signed certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client.ssl_context = ctx


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, name, seen):
        super().__init__(jid, password)
        self.name = name
        self.seen = seen
        self.ready = asyncio.Event()
        self.gone = asyncio.Event()
        insecure(self)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("changed_status", self.on_status)
        self.add_event_handler("failed_auth", lambda _: self.seen.add(f"{name}:failed_auth"))
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        self.add_event_handler("roster_update", self.on_roster)

    async def start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.seen.add(f"{self.name}:session")
        self.ready.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.seen.add(f"{self.name}:message:{msg['body']}")

    def on_status(self, presence):
        who = presence["from"].bare
        kind = presence["type"]
        self.seen.add(f"{self.name}:presence:{who}:{kind}")

    def on_roster(self, _iq):
        for jid in self.client_roster:
            item = self.client_roster[jid]
            self.seen.add(f"{self.name}:roster:{jid}:{item['subscription']}")


async def wait_for(seen, key):
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while key not in seen:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(key)
        await asyncio.sleep(0.05)


async def main(host, port, alice_jid, alice_pw, bob_jid, bob_pw):
    seen = set()
    alice = Client(alice_jid, alice_pw, "alice", seen)
    bob = Client(bob_jid, bob_pw, "bob", seen)
    # bob accepts alice's request and asks back; alice accepts bob's.
    for c in (alice, bob):
        c.roster.auto_authorize = True
        c.roster.auto_subscribe = True
    alice_bare = slixmpp.JID(alice_jid).bare
    bob_bare = slixmpp.JID(bob_jid).bare
    steps = []
    try:
        for c in (alice, bob):
            # Plain TCP upgraded with STARTTLS (the server requires it).
            c.enable_direct_tls = False
            c.enable_starttls = True
            c.enable_plaintext = False
            c.connect(host=host, port=int(port))
        await asyncio.wait_for(asyncio.gather(alice.ready.wait(), bob.ready.wait()), TIMEOUT)
        steps.append("both logged in over STARTTLS")

        alice.send_presence(pto=bob_bare, ptype="subscribe")
        await wait_for(seen, f"alice:roster:{bob_bare}:both")
        await wait_for(seen, f"bob:roster:{alice_bare}:both")
        steps.append("subscription both ways")
        await wait_for(seen, f"alice:presence:{bob_bare}:available")
        await wait_for(seen, f"bob:presence:{alice_bare}:available")
        steps.append("presence seen both ways")

        alice.send_message(mto=bob_bare, mbody="hello bob", mtype="chat")
        await wait_for(seen, "bob:message:hello bob")
        bob.send_message(mto=alice_jid, mbody="hello alice", mtype="chat")
        await wait_for(seen, "alice:message:hello alice")
        steps.append("chat both ways")

        info = await alice.plugin["xep_0030"].get_info(jid=slixmpp.JID(alice_jid).domain, timeout=TIMEOUT)
        features = info["disco_info"]["features"]
        assert "urn:xmpp:ping" in features, features
        await alice.plugin["xep_0199"].ping(jid=slixmpp.JID(alice_jid).domain, timeout=TIMEOUT)
        steps.append("disco#info and ping")

        bob.disconnect()
        await asyncio.wait_for(bob.gone.wait(), TIMEOUT)
        await wait_for(seen, f"alice:presence:{bob_bare}:unavailable")
        steps.append("offline seen")
        alice.disconnect()
        await asyncio.wait_for(alice.gone.wait(), TIMEOUT)
    except (TimeoutError, asyncio.TimeoutError, AssertionError, slixmpp.exceptions.IqError) as e:
        print(f"FAILED after {steps}: waiting for {e!r}")
        print("observed:", sorted(seen))
        return 1
    print("OK:", "; ".join(steps))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if len(sys.argv) != 7:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

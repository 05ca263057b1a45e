#!/usr/bin/env python3
"""Stream Management resumption (XEP-0198) with slixmpp.

Bob logs in with stream management, his TCP connection is cut without closing the
stream, alice sends him messages meanwhile, bob reconnects and resumes: he gets every
message once, and the server reports the session as resumed.

Usage: slixmpp_resume.py HOST PORT ALICE_JID ALICE_PW BOB_JID BOB_PW
"""

import asyncio
import os
import ssl
import sys

import slixmpp

TIMEOUT = float(os.environ.get("IMBUS_INTEROP_TIMEOUT", "20"))


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, sm):
        super().__init__(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.ready = asyncio.Event()
        self.resumed = asyncio.Event()
        self.bodies = []
        if sm:
            self.register_plugin("xep_0198")
            self.plugin["xep_0198"].allow_resume = True
            self.add_event_handler("session_resumed", lambda _: self.resumed.set())
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)

    async def start(self, _event):
        self.send_presence()
        await self.get_roster()
        self.ready.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.bodies.append(msg["body"])


async def main(host, port, alice_jid, alice_pw, bob_jid, bob_pw):
    alice = Client(alice_jid, alice_pw, sm=False)
    bob = Client(bob_jid, bob_pw, sm=True)
    for c in (alice, bob):
        c.connect(host, int(port))
    try:
        await asyncio.wait_for(asyncio.gather(alice.ready.wait(), bob.ready.wait()), TIMEOUT)
        sm = bob.plugin["xep_0198"]
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not sm.sm_id and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if not sm.sm_id:
            print("FAILED: stream management was not enabled with resumption")
            return 1
        alice.send_message(mto=slixmpp.JID(bob_jid).bare, mbody="before", mtype="chat")
        while "before" not in bob.bodies and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        # Cut bob's connection without closing the stream.
        bob.transport.abort()
        await asyncio.sleep(0.5)
        for i in range(3):
            alice.send_message(mto=bob_jid, mbody=f"while away {i}", mtype="chat")
        await asyncio.sleep(1.0)
        bob.connect(host, int(port))
        await asyncio.wait_for(bob.resumed.wait(), TIMEOUT)
        expected = ["before", "while away 0", "while away 1", "while away 2"]
        while bob.bodies != expected and asyncio.get_running_loop().time() < deadline + TIMEOUT:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        if bob.bodies != expected:
            print(f"FAILED: bob got {bob.bodies}, expected {expected}")
            return 1
    except (asyncio.TimeoutError, TimeoutError) as e:
        print(f"FAILED: timed out ({e!r}); bob got {bob.bodies}")
        return 1
    finally:
        for c in (alice, bob):
            c.disconnect()
        await asyncio.sleep(0.3)
    print("OK: resumed, every message once, in order")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 7:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

#!/usr/bin/env python3
"""Offline messages (XEP-0160) with slixmpp.

Usage:
  slixmpp_offline.py HOST PORT JID PW send TO COUNT     send COUNT chat messages to TO
  slixmpp_offline.py HOST PORT JID PW receive COUNT [any]
                                                        log in and expect COUNT messages,
                                                        in order, with a XEP-0203 delay
                                                        (`any`: with or without one)
Exit code 0 on success, 1 with what differed otherwise.
"""

import asyncio
import os
import ssl
import sys

import slixmpp

# Seconds to wait for a login or for the expected messages (IMBUS_INTEROP_TIMEOUT).
TIMEOUT = float(os.environ.get("IMBUS_INTEROP_TIMEOUT", "20"))


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.register_plugin("xep_0203")
        self.ready = asyncio.Event()
        self.messages = []
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)

    async def start(self, _event):
        self.send_presence()
        self.ready.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.messages.append((msg["body"], msg["delay"]["stamp"]))


async def main(host, port, jid, password, action, *args):
    client = Client(jid, password)
    client.connect(host, int(port))
    try:
        await asyncio.wait_for(client.ready.wait(), TIMEOUT)
    except asyncio.TimeoutError:
        print("FAILED: login did not complete")
        return 1
    status = 0
    if action == "send":
        to, count = args[0], int(args[1])
        for i in range(count):
            client.send_message(mto=to, mbody=f"offline-{i}", mtype="chat")
        # Let the server acknowledge before closing (stream close flushes too).
        await asyncio.sleep(0.5)
        print(f"OK: sent {count}")
    else:
        count = int(args[0])
        need_delay = not (len(args) > 1 and args[1] == "any")
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while len(client.messages) < count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) arrives too
        bodies = [b for b, _ in client.messages]
        expected = [f"offline-{i}" for i in range(count)]
        if bodies != expected:
            print(f"FAILED: got {bodies}, expected {expected}")
            status = 1
        elif need_delay and any(stamp is None or stamp == "" for _, stamp in client.messages):
            print(f"FAILED: a message has no delay stamp: {client.messages}")
            status = 1
        else:
            print(f"OK: {count} messages, once each, in order")
    client.disconnect()
    await asyncio.sleep(0.2)
    return status


if __name__ == "__main__":
    if len(sys.argv) < 7:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

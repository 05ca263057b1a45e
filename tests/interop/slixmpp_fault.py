#!/usr/bin/env python3
"""Steady message traffic for a fault test, counted at both ends.

Senders s0..s<S-1>@DOMAIN and receivers r0..r<R-1>@DOMAIN (password `Pw-<name>`) log in;
the receivers announce themselves available and stay online. Each sender sends numbered
chat messages (`fault:<sender>:<n>`), round robin to the receivers' bare JIDs, RATE per
second each for SECONDS, with Stream Management (XEP-0198): a message is *accepted*
once the server acknowledged it with `<a/>` (the server acknowledges only what the log
made durable). Receivers count every message that arrives, without deduplicating.

Prints `SENDING` when traffic starts (the test injects its fault then), and at the end
one line `RESULT <json>`: the accepted messages with their recipients, the number of
arrivals of every message that arrived, and the sent count. Exits 0 when every
accepted message arrived exactly once and nothing arrived twice; 1 otherwise.

Usage: slixmpp_fault.py HOST PORT DOMAIN SENDERS RECEIVERS RATE SECONDS
"""

import asyncio
import json
import os
import ssl
import sys

import slixmpp

# Seconds to wait for logins, acknowledgements and arrivals (IMBUS_INTEROP_TIMEOUT).
TIMEOUT = float(os.environ.get("IMBUS_INTEROP_TIMEOUT", "60"))


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, arrivals=None):
        super().__init__(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.register_plugin("xep_0198")
        self.plugin["xep_0198"].allow_resume = False
        self.ready = asyncio.Event()
        self.sm_enabled = asyncio.Event()
        self.accepted = []
        self.arrivals = arrivals
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("sm_enabled", lambda _: self.sm_enabled.set())
        self.add_event_handler("stanza_acked", self.on_acked)
        self.add_event_handler("message", self.on_message)

    async def start(self, _event):
        self.send_presence()
        self.ready.set()

    def on_acked(self, stanza):
        if stanza.name == "message" and stanza["body"].startswith("fault:"):
            self.accepted.append((stanza["body"], str(stanza["to"])))

    def on_message(self, msg):
        if self.arrivals is None or msg["type"] not in ("chat", "normal"):
            return
        body = msg["body"]
        if body.startswith("fault:"):
            self.arrivals[body] = self.arrivals.get(body, 0) + 1


async def main(host, port, domain, senders, receivers, rate, seconds):
    senders, receivers = int(senders), int(receivers)
    rate, seconds = float(rate), float(seconds)
    loop = asyncio.get_running_loop()
    arrivals = {}
    rx = [Client(f"r{i}@{domain}/fault", f"Pw-r{i}", arrivals) for i in range(receivers)]
    tx = [Client(f"s{i}@{domain}/fault", f"Pw-s{i}") for i in range(senders)]
    for c in rx + tx:
        c.connect(host, int(port))
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.ready.wait() for c in rx + tx), *(c.sm_enabled.wait() for c in tx)),
            TIMEOUT,
        )
    except asyncio.TimeoutError:
        print("FAILED: logins did not complete", flush=True)
        return 1
    # The receivers' available presence is processed before the first message.
    await asyncio.sleep(1.0)
    print("SENDING", flush=True)
    sent = 0

    async def send_from(index, client):
        nonlocal sent
        n = 0
        start = loop.time()
        while loop.time() - start < seconds:
            to = f"r{(index + n) % receivers}@{domain}"
            client.send_message(mto=to, mbody=f"fault:s{index}:{n}", mtype="chat")
            sent += 1
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))

    await asyncio.gather(*(send_from(i, c) for i, c in enumerate(tx)))
    # Every sent message acknowledged (or the timeout).
    deadline = loop.time() + TIMEOUT
    while sum(len(c.accepted) for c in tx) < sent and loop.time() < deadline:
        for c in tx:
            c.plugin["xep_0198"].request_ack()
        await asyncio.sleep(0.5)
    accepted = [pair for c in tx for pair in c.accepted]
    # Every accepted message arrived (or the timeout), then a grace period in which a
    # repeat would arrive too.
    while loop.time() < deadline and any(body not in arrivals for body, _ in accepted):
        await asyncio.sleep(0.2)
    await asyncio.sleep(3.0)
    result = {
        "sent": sent,
        "accepted": accepted,
        "arrivals": arrivals,
    }
    print("RESULT " + json.dumps(result), flush=True)
    missing = [b for b, _ in accepted if arrivals.get(b, 0) == 0]
    repeated = {b: n for b, n in arrivals.items() if n > 1}
    status = 0
    if missing:
        print(f"FAILED: {len(missing)} accepted messages never arrived: {missing[:20]}", flush=True)
        status = 1
    if repeated:
        print(f"FAILED: {len(repeated)} messages arrived more than once: {list(repeated.items())[:20]}", flush=True)
        status = 1
    if status == 0:
        print(f"OK: {len(accepted)} of {sent} messages accepted, each arrived once", flush=True)
    for c in rx + tx:
        c.disconnect()
    await asyncio.sleep(0.5)
    return status


if __name__ == "__main__":
    if len(sys.argv) != 8:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

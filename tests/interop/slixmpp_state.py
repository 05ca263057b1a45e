#!/usr/bin/env python3
"""Checks account state kept by the server, with slixmpp.

Usage:
  slixmpp_state.py HOST PORT JID PW set-vcard FULLNAME
  slixmpp_state.py HOST PORT JID PW expect CONTACT SUBSCRIPTION FULLNAME

`set-vcard` stores a vCard (XEP-0054) with the given full name. `expect` logs in and
checks that the roster has CONTACT with SUBSCRIPTION and that the stored vCard has
FULLNAME. Exit code 0 on success, 1 with what differed otherwise.
"""

import asyncio
import ssl
import sys

import slixmpp

TIMEOUT = 20.0


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.register_plugin("xep_0054")
        self.ready = asyncio.Event()
        self.failed = asyncio.Event()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("failed_auth", lambda _: self.failed.set())

    async def start(self, _event):
        await self.get_roster()
        self.ready.set()


async def main(host, port, jid, password, action, *args):
    client = Client(jid, password)
    client.connect(host, int(port))
    done, _ = await asyncio.wait(
        [asyncio.ensure_future(client.ready.wait()), asyncio.ensure_future(client.failed.wait())],
        timeout=TIMEOUT,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if not client.ready.is_set():
        print("FAILED: login did not complete")
        return 1
    vcard_plugin = client.plugin["xep_0054"]
    status = 0
    if action == "set-vcard":
        vcard = vcard_plugin.make_vcard()
        vcard["FN"] = args[0]
        await vcard_plugin.publish_vcard(vcard, timeout=TIMEOUT)
        print("OK: vCard stored")
    elif action == "expect":
        contact, subscription, fullname = args
        roster = client.client_roster
        got = roster[contact]["subscription"] if contact in roster else None
        if got != subscription:
            print(f"FAILED: roster item {contact}: {got!r}, expected {subscription!r}")
            status = 1
        iq = await vcard_plugin.get_vcard(jid=slixmpp.JID(jid).bare, local=False, cached=False, timeout=TIMEOUT)
        fn = iq["vcard_temp"]["FN"]
        if fn != fullname:
            print(f"FAILED: vCard FN {fn!r}, expected {fullname!r}")
            status = 1
        if status == 0:
            print(f"OK: {contact} is {subscription}; vCard FN {fn}")
    client.disconnect()
    await asyncio.sleep(0.2)
    return status


if __name__ == "__main__":
    if len(sys.argv) < 7:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

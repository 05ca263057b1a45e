#!/usr/bin/env python3
"""In-Band Registration (XEP-0077) with slixmpp over STARTTLS.

Runs the given steps one after the other, each on a new connection, and prints one line
per step: `STEP <name> <jid> -> <outcome>`.

Steps (passwords must not contain ':'):
  register:JID:PW[:USERNAME]
                       asks for the form before authenticating (even when the feature is
                       not advertised), registers (as USERNAME when given, instead of the
                       JID's localpart), then logs in. Outcome:
                       `advertised=<yes|no> <session|refused:COND|auth-failed|...>`
  login:JID:PW         logs in: `session` or `auth-failed`
  passwd:JID:PW:NEW    logs in and changes the password: `changed` or `refused:COND`
  cancel:JID:PW        logs in and cancels the account: `cancelled` (the server then
                       closes the stream) or `refused:COND`

Usage: slixmpp_register.py HOST PORT STEP...
"""

import asyncio
import os
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.stanza import StreamFeatures

TIMEOUT = float(os.environ.get("IMBUS_INTEROP_TIMEOUT", "20"))


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, register, username=None):
        super().__init__(jid, password)
        self.register_as = username
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.done = asyncio.Event()
        self.outcome = None
        self.advertised = False
        self.stream_closed = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.finish("session"))
        self.add_event_handler("failed_all_auth", lambda _: self.finish("auth-failed"))
        self.add_event_handler("disconnected", self.on_disconnected)
        for plugin in ("xep_0030", "xep_0004", "xep_0066", "xep_0077"):
            self.register_plugin(plugin)
        if register:
            # Notes whether the server advertised registration, then adds the feature
            # so the request is sent in any case.
            self.add_filter("in", self.note_features)
            self.unregister_feature("register", self.plugin["xep_0077"].order)
            self.register_feature("register", self.on_register_feature, restart=False, order=50)
        else:
            self.plugin["xep_0077"].create_account = False

    def finish(self, outcome):
        if not self.done.is_set():
            self.outcome = outcome
            self.done.set()

    def on_disconnected(self, _event):
        self.stream_closed.set()
        self.finish("disconnected")

    def note_features(self, stanza):
        if isinstance(stanza, StreamFeatures) and "mechanisms" in stanza["features"]:
            self.advertised = "register" in stanza["features"]
            stanza.enable("register")
        return stanza

    async def on_register_feature(self, _features):
        if "mechanisms" in self.features:
            return False
        try:
            form = await self.plugin["xep_0077"].get_registration(timeout=TIMEOUT)
            fields = form["register"]["fields"]
            if "username" not in fields or "password" not in fields:
                self.finish(f"bad-form:{form}")
                self.disconnect()
                return True
            iq = self.Iq()
            iq["type"] = "set"
            iq["register"]["username"] = self.register_as or self.boundjid.user
            iq["register"]["password"] = self.password
            await iq.send(timeout=TIMEOUT)
        except IqError as e:
            self.finish(f"refused:{e.iq['error']['condition']}")
            self.disconnect()
            return True
        except IqTimeout:
            self.finish("timeout")
            self.disconnect()
            return True
        return False


async def run_step(host, port, step):
    kind, jid, password, *rest = step.split(":")
    username = rest[0] if kind == "register" and rest else None
    client = Client(jid, password, register=(kind == "register"), username=username)
    client.connect(host, int(port))
    try:
        await asyncio.wait_for(client.done.wait(), TIMEOUT)
        outcome = client.outcome
        if outcome == "session" and kind == "passwd":
            try:
                await client.plugin["xep_0077"].change_password(rest[0], timeout=TIMEOUT)
                outcome = "changed"
            except IqError as e:
                outcome = f"refused:{e.iq['error']['condition']}"
        elif outcome == "session" and kind == "cancel":
            try:
                await client.plugin["xep_0077"].cancel_registration(timeout=TIMEOUT)
                # The server ends the stream once the account is gone.
                await asyncio.wait_for(client.stream_closed.wait(), TIMEOUT)
                outcome = "cancelled"
            except IqError as e:
                outcome = f"refused:{e.iq['error']['condition']}"
        if kind == "register":
            outcome = f"advertised={'yes' if client.advertised else 'no'} {outcome}"
    except (asyncio.TimeoutError, TimeoutError, IqTimeout):
        outcome = f"timeout (after {client.outcome})"
    finally:
        client.disconnect()
        await asyncio.sleep(0.2)
    print(f"STEP {kind} {jid} -> {outcome}", flush=True)


async def main(host, port, steps):
    for step in steps:
        await run_step(host, port, step)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 4:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:])))

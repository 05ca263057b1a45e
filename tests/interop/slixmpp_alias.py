#!/usr/bin/env python3
"""Chat node aliases with slixmpp against `imbus serve`: is a persistent room reachable at
an alias, with its state?

Usage:
  slixmpp_alias.py HOST PORT DOMAIN ACTION ROOM

The client is user1@DOMAIN (password Pw-user1), connecting from 127.0.0.2.

Actions:
  create   create ROOM (room@alias) as a persistent room named "Kept" with subject
           "Subject of <ROOM>" and one message "said in <ROOM>", then leave it empty
  check    enter ROOM: it exists (not created now), with that subject and message in its
           history
  (create and check first wait until the alias's chat service answers)
  absent   ROOM does not answer: service discovery of it fails with an error (its alias
           is served by no chat node, so the server treats it as another domain's)

Prints "OK: …" and exits 0 on success; prints "FAILED: …" and exits 1 otherwise.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from slixmpp.exceptions import IqError, IqTimeout  # noqa: E402

from slixmpp_muc import TIMEOUT, Failed, check, connect, create  # noqa: E402


async def served(client, room):
    """Waits until the chat service of ROOM's alias answers service discovery: an alias
    change reaches the router and the rooms processor a moment after it is made."""
    service = room.split("@", 1)[1]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        try:
            await client.plugin["xep_0030"].get_info(jid=service, timeout=1)
            return
        except (IqError, IqTimeout) as e:
            if loop.time() > deadline:
                raise Failed(f"the chat service {service} does not answer: {e}")
            await asyncio.sleep(0.1)


async def do_create(client, room):
    await served(client, room)
    await create(client, room, "Owner", {
        "muc#roomconfig_persistentroom": "1",
        "muc#roomconfig_roomname": "Kept",
    })
    subject = client.make_message(mto=room, mtype="groupchat")
    subject["subject"] = f"Subject of {room}"
    subject.send()
    client.say(room, f"said in {room}")
    await client.wait_for(lambda: f"said in {room}" in client.groupchat_bodies(room),
                          "the message's echo")
    client.leave(room, "Owner")
    await client.wait_for(
        lambda: any(str(p["from"]) == f"{room}/Owner" and p["type"] == "unavailable"
                    for p in client.presences),
        "the owner's own unavailable presence")
    return f"persistent room {room} created"


async def do_check(client, room):
    await served(client, room)
    result = await client.join(room, "Owner")
    check(result[0] == "ok", f"entering {room}: {result}")
    check("201" not in result[1], f"{room} was created anew, not found: {result}")
    check(result[3] == f"Subject of {room}", f"the subject of {room}: {result[3]!r}")
    check(f"said in {room}" in result[2], f"the history of {room}: {result[2]}")
    client.leave(room, "Owner")
    return f"{room} is reachable with its subject and history"


async def do_absent(client, room):
    try:
        info = await client.plugin["xep_0030"].get_info(jid=room, timeout=TIMEOUT)
    except IqTimeout:
        raise Failed(f"service discovery of {room} went unanswered")
    except IqError as e:
        return f"{room} is not reachable ({e.condition})"
    raise Failed(f"{room} answered service discovery: {info}")


ACTIONS = {"create": do_create, "check": do_check, "absent": do_absent}


async def main(host, port, domain, action, room):
    client = None
    try:
        client = await connect(host, port, domain, 1)
        text = await ACTIONS[action](client, room)
        print(f"OK: {text}")
        status = 0
    except (Failed, IqError) as e:
        print(f"FAILED: {e}")
        status = 1
    if client is not None:
        client.disconnect()
    await asyncio.sleep(0.2)
    return status


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[4] not in ACTIONS:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

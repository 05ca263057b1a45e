-- imbus room archive, SQLite: persistent chat rooms and their transcripts.
--
-- Times are RFC 3339 text in UTC with exactly six fractional digits
-- (`2025-01-31T12:00:00.000000Z`), so they sort and compare as text. Booleans are 0/1.
-- The room archive needs a database file of its own: the compliance archive has a
-- TC_MSGARCHIVE table of another shape, and both keep their migration history in
-- _sqlx_migrations.

-- TC_ROOMS: one row per persistent room, kept after the room is destroyed.
--   room_jid           the room's bare JID (`team@conference-1-imbus.example.com`)
--   name               muc#roomconfig_roomname, NULL when unset
--   description        muc#roomconfig_roomdesc, NULL when unset
--   subject            the current subject, NULL when none was set
--   is_public          listed in the room directory
--   members_only       only members may enter
--   moderated          only occupants with voice may speak
--   password_protected entering needs a password (the password is never stored)
--   max_users          most occupants at once, NULL: no limit
--   history_length     messages sent to new joiners, NULL: the service setting
--   created_at         when the room was created
--   updated_at         when the room last changed, or ended
--   destroyed_at       when the room was destroyed (or stopped being persistent);
--                      NULL while it exists
CREATE TABLE IF NOT EXISTS TC_ROOMS (
    room_jid           TEXT    NOT NULL PRIMARY KEY,
    name               TEXT,
    description        TEXT,
    subject            TEXT,
    is_public          INTEGER NOT NULL,
    members_only       INTEGER NOT NULL,
    moderated          INTEGER NOT NULL,
    password_protected INTEGER NOT NULL,
    max_users          INTEGER,
    history_length     INTEGER,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    destroyed_at       TEXT
);

-- TC_USERS: the affiliations of existing rooms other than `none`.
--   room_jid     the room's bare JID
--   real_jid     the affiliated user's real bare JID
--   affiliation  owner | admin | member | outcast
CREATE TABLE IF NOT EXISTS TC_USERS (
    room_jid     TEXT NOT NULL,
    real_jid     TEXT NOT NULL,
    affiliation  TEXT NOT NULL,
    PRIMARY KEY (room_jid, real_jid)
);

-- TC_MSGARCHIVE: one row per group chat message of an archived room.
--   id           the row's number, which the full-text index refers to (an INTEGER
--                PRIMARY KEY, so VACUUM never renumbers it)
--   msg_id       the archive id (XEP-0313 result id, the room's <stanza-id/>) as
--                hyphenated lower-case UUID text, unique; storing a message again changes
--                nothing
--   room_jid     the room's bare JID
--   seq          the message's place in the room's transcript (results are ordered by
--                it; unique within a room)
--   from_jid     the sender's real full JID
--   nickname     the sender's nickname in the room
--   sent_date    when the server received the message
--   subject      the <subject/> the message carried, NULL when none
--   body_len     the body's length in bytes of UTF-8 (0 without a body)
--   message_len  the stanza's length in bytes of UTF-8
--   body_text    the <body/>, NULL when none (full-text indexed)
--   message_text the message as the room broadcast it (XML)
CREATE TABLE IF NOT EXISTS TC_MSGARCHIVE (
    id           INTEGER PRIMARY KEY,
    msg_id       TEXT    NOT NULL UNIQUE,
    room_jid     TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    from_jid     TEXT    NOT NULL,
    nickname     TEXT    NOT NULL,
    sent_date    TEXT    NOT NULL,
    subject      TEXT,
    body_len     INTEGER NOT NULL,
    message_len  INTEGER NOT NULL,
    body_text    TEXT,
    message_text TEXT    NOT NULL
);
-- Transcript order within a room (paging, counting), a nickname's messages, a period.
CREATE INDEX IF NOT EXISTS tc_msgarchive_room_seq ON TC_MSGARCHIVE (room_jid, seq);
CREATE INDEX IF NOT EXISTS tc_msgarchive_room_nick_seq ON TC_MSGARCHIVE (room_jid, nickname, seq);
CREATE INDEX IF NOT EXISTS tc_msgarchive_room_date ON TC_MSGARCHIVE (room_jid, sent_date);

-- TC_MSGARCHIVE_FTS: full-text index of TC_MSGARCHIVE.body_text (FTS5, external
-- content: the text stays in TC_MSGARCHIVE; the triggers below keep the index in step).
-- The unicode61 tokenizer splits words at every character that is not a letter or a
-- digit and folds case (and diacritics: "cafe" finds "café") across Unicode; searches
-- quote every word, so they find whole words and user text is never FTS5 syntax.
CREATE VIRTUAL TABLE IF NOT EXISTS TC_MSGARCHIVE_FTS USING fts5(
    body_text,
    content = 'TC_MSGARCHIVE',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS tc_msgarchive_fts_insert AFTER INSERT ON TC_MSGARCHIVE BEGIN
    INSERT INTO TC_MSGARCHIVE_FTS (rowid, body_text) VALUES (new.id, new.body_text);
END;
CREATE TRIGGER IF NOT EXISTS tc_msgarchive_fts_delete AFTER DELETE ON TC_MSGARCHIVE BEGIN
    INSERT INTO TC_MSGARCHIVE_FTS (TC_MSGARCHIVE_FTS, rowid, body_text)
        VALUES ('delete', old.id, old.body_text);
END;
CREATE TRIGGER IF NOT EXISTS tc_msgarchive_fts_update AFTER UPDATE ON TC_MSGARCHIVE BEGIN
    INSERT INTO TC_MSGARCHIVE_FTS (TC_MSGARCHIVE_FTS, rowid, body_text)
        VALUES ('delete', old.id, old.body_text);
    INSERT INTO TC_MSGARCHIVE_FTS (rowid, body_text) VALUES (new.id, new.body_text);
END;

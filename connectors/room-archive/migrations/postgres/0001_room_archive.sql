-- imbus room archive, PostgreSQL: persistent chat rooms and their transcripts.
--
-- The room archive needs a database (or, on PostgreSQL, a schema chosen with the URL's
-- `options=-c search_path=...`) of its own: the compliance archive has a TC_MSGARCHIVE
-- table of another shape, and both keep their migration history in _sqlx_migrations.
--
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
--   updated_at         when the room last changed (or ended)
--   destroyed_at       when the room was destroyed (or stopped being persistent);
--                      NULL while it exists
CREATE TABLE IF NOT EXISTS TC_ROOMS (
    room_jid           TEXT         NOT NULL PRIMARY KEY,
    name               TEXT,
    description        TEXT,
    subject            TEXT,
    is_public          BOOLEAN      NOT NULL,
    members_only       BOOLEAN      NOT NULL,
    moderated          BOOLEAN      NOT NULL,
    password_protected BOOLEAN      NOT NULL,
    max_users          BIGINT,
    history_length     BIGINT,
    created_at         TIMESTAMPTZ  NOT NULL,
    updated_at         TIMESTAMPTZ  NOT NULL,
    destroyed_at       TIMESTAMPTZ
);

-- TC_USERS: the affiliations of existing rooms other than `none`.
--   room_jid     the room's bare JID
--   real_jid     the affiliated user's real bare JID
--   affiliation  owner | admin | member | outcast
CREATE TABLE IF NOT EXISTS TC_USERS (
    room_jid     TEXT         NOT NULL,
    real_jid     TEXT         NOT NULL,
    affiliation  VARCHAR(16)  NOT NULL,
    PRIMARY KEY (room_jid, real_jid)
);

-- TC_MSGARCHIVE: one row per group chat message of an archived room.
--   msg_id       the archive id (XEP-0313 result id, the room's <stanza-id/>) as
--                hyphenated lower-case UUID text; storing a message again changes nothing
--   room_jid     the room's bare JID
--   seq          the message's place in the room's transcript (results are ordered by
--                it; unique within a room)
--   from_jid     the sender's real full JID
--   nickname     the sender's nickname in the room
--   sent_date    when the server received the message
--   subject      the <subject/> the message carried, NULL when none
--   body_len     the body's length in bytes of UTF-8 (0 without a body)
--   message_len  the stanza's length in bytes of UTF-8
--   body_text    the <body/>, NULL when none
--   message_text the message as the room broadcast it (XML)
--   body_tsv     full-text index of the body: its words (runs of letters and digits:
--                punctuation and spaces are replaced by a space first, so "example.com"
--                or "alice@example.com" hold the words "example" and "com" as on the
--                other backends) in the 'simple' configuration (lower-cased, no stemming,
--                no stop words), so a search finds whole words case-insensitively (for
--                non-ASCII letters, as the database's LC_CTYPE says). Only the first
--                100,000 characters of a body are indexed: a tsvector is limited to 1 MB,
--                and a larger body must still be stored.
CREATE TABLE IF NOT EXISTS TC_MSGARCHIVE (
    msg_id       VARCHAR(36)  NOT NULL PRIMARY KEY,
    room_jid     TEXT         NOT NULL,
    seq          BIGINT       NOT NULL,
    from_jid     TEXT         NOT NULL,
    nickname     TEXT         NOT NULL,
    sent_date    TIMESTAMPTZ  NOT NULL,
    subject      TEXT,
    body_len     BIGINT       NOT NULL,
    message_len  BIGINT       NOT NULL,
    body_text    TEXT,
    message_text TEXT         NOT NULL,
    body_tsv     tsvector     GENERATED ALWAYS AS
                 (to_tsvector('simple', regexp_replace(left(coalesce(body_text, ''), 100000),
                                                      '[[:punct:][:space:]]+', ' ', 'g'))) STORED
);
-- Transcript order within a room (paging, counting), a nickname's messages, a period.
CREATE INDEX IF NOT EXISTS tc_msgarchive_room_seq ON TC_MSGARCHIVE (room_jid, seq);
CREATE INDEX IF NOT EXISTS tc_msgarchive_room_nick_seq ON TC_MSGARCHIVE (room_jid, nickname, seq);
CREATE INDEX IF NOT EXISTS tc_msgarchive_room_date ON TC_MSGARCHIVE (room_jid, sent_date);
CREATE INDEX IF NOT EXISTS tc_msgarchive_body_tsv ON TC_MSGARCHIVE USING GIN (body_tsv);

-- imbus compliance archive, SQLite.
-- sent_date is RFC 3339 text in UTC; record_id (a UUID v5 of the event id and the
-- recipient) makes every insert idempotent.

CREATE TABLE IF NOT EXISTS JM (
    record_id    TEXT    NOT NULL PRIMARY KEY,
    event_id     TEXT    NOT NULL,
    to_jid       TEXT    NOT NULL,
    from_jid     TEXT    NOT NULL,
    sent_date    TEXT    NOT NULL,
    subject      TEXT,
    thread_id    TEXT,
    msg_type     TEXT    NOT NULL,
    direction    TEXT    NOT NULL,
    origin       TEXT    NOT NULL,
    body_len     INTEGER NOT NULL,
    message_len  INTEGER NOT NULL,
    body_text    TEXT,
    message_text TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS jm_to_date ON JM (to_jid, sent_date);
CREATE INDEX IF NOT EXISTS jm_from_date ON JM (from_jid, sent_date);
CREATE INDEX IF NOT EXISTS jm_date ON JM (sent_date);

CREATE TABLE IF NOT EXISTS TC_MSGARCHIVE (
    record_id    TEXT    NOT NULL PRIMARY KEY,
    msg_id       TEXT    NOT NULL,
    room_jid     TEXT,
    to_jid       TEXT    NOT NULL,
    from_jid     TEXT    NOT NULL,
    nickname     TEXT,
    sent_date    TEXT    NOT NULL,
    subject      TEXT,
    msg_type     TEXT    NOT NULL,
    direction    TEXT    NOT NULL,
    origin       TEXT    NOT NULL,
    body_len     INTEGER NOT NULL,
    message_len  INTEGER NOT NULL,
    body_text    TEXT,
    message_text TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS tc_msgarchive_room_date ON TC_MSGARCHIVE (room_jid, sent_date);
CREATE INDEX IF NOT EXISTS tc_msgarchive_to_date ON TC_MSGARCHIVE (to_jid, sent_date);
CREATE INDEX IF NOT EXISTS tc_msgarchive_date ON TC_MSGARCHIVE (sent_date);

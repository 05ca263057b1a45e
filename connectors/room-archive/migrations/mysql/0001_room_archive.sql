-- imbus room archive, MySQL 8 / MariaDB 10.5 or newer: persistent chat rooms and their
-- transcripts.
--
-- The room archive needs a database of its own: the compliance archive has a
-- TC_MSGARCHIVE table of another shape, and both keep their migration history in
-- _sqlx_migrations.
--
-- Text is utf8mb4 (every Unicode character, astral planes included, stored exactly);
-- LONGTEXT holds a whole stanza, so nothing is ever cut (sessions run in strict mode: a
-- value that does not fit is an error, never truncated). JIDs and nicknames that are
-- part of a key are VARBINARY (UTF-8 bytes, compared exactly): InnoDB keys are limited to
-- 3072 bytes, so a room JID and a real JID may have at most 1536 bytes each and a
-- nickname 1023 bytes (the XMPP limit of a resource part).
--
-- Full-text search: the FULLTEXT index on TC_MSGARCHIVE.body_text, queried with
-- MATCH(body_text) AGAINST('+word1 +word2' IN BOOLEAN MODE). body_text has a
-- case-insensitive collation (utf8mb4_unicode_ci), so searches ignore case (and accents,
-- as on SQLite; PostgreSQL keeps them). The index is created without stop words (the session
-- setting below), so "the" or "with" are found like any other word. InnoDB does not index
-- words shorter than innodb_ft_min_token_size (3 characters by default, including a
-- two-character CJK word) or longer than innodb_ft_max_token_size (84); the connector
-- checks such words with a whole-word REGEXP on the rows the other words selected, so
-- results are the same (except that such a short word must match its accents), only
-- slower when every word of a search is that short. A stop word table configured on the
-- server (innodb_ft_server_stopword_table) is not used by this index either. InnoDB
-- treats `_` as part of a word where the other backends split words there.
SET @imbus_ft_enable_stopword = @@SESSION.innodb_ft_enable_stopword;
SET SESSION innodb_ft_enable_stopword = OFF;

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
--   created_at         when the room was created (UTC)
--   updated_at         when the room last changed, or ended (UTC)
--   destroyed_at       when the room was destroyed (or stopped being persistent), UTC;
--                      NULL while it exists
CREATE TABLE IF NOT EXISTS TC_ROOMS (
    room_jid           VARBINARY(1536) NOT NULL PRIMARY KEY,
    name               LONGTEXT,
    description        LONGTEXT,
    subject            LONGTEXT,
    is_public          BOOLEAN         NOT NULL,
    members_only       BOOLEAN         NOT NULL,
    moderated          BOOLEAN         NOT NULL,
    password_protected BOOLEAN         NOT NULL,
    max_users          BIGINT,
    history_length     BIGINT,
    created_at         DATETIME(6)     NOT NULL,
    updated_at         DATETIME(6)     NOT NULL,
    destroyed_at       DATETIME(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- TC_USERS: the affiliations of existing rooms other than `none`.
--   room_jid     the room's bare JID
--   real_jid     the affiliated user's real bare JID
--   affiliation  owner | admin | member | outcast
CREATE TABLE IF NOT EXISTS TC_USERS (
    room_jid     VARBINARY(1536) NOT NULL,
    real_jid     VARBINARY(1536) NOT NULL,
    affiliation  VARCHAR(16)     CHARACTER SET ascii NOT NULL,
    PRIMARY KEY (room_jid, real_jid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- TC_MSGARCHIVE: one row per group chat message of an archived room.
--   msg_id       the archive id (XEP-0313 result id, the room's <stanza-id/>) as
--                hyphenated lower-case UUID text; storing a message again changes nothing
--   room_jid     the room's bare JID
--   seq          the message's place in the room's transcript (results are ordered by
--                it; unique within a room)
--   from_jid     the sender's real full JID
--   nickname     the sender's nickname in the room
--   sent_date    when the server received the message (UTC)
--   subject      the <subject/> the message carried, NULL when none
--   body_len     the body's length in bytes of UTF-8 (0 without a body)
--   message_len  the stanza's length in bytes of UTF-8
--   body_text    the <body/>, NULL when none (full-text indexed)
--   message_text the message as the room broadcast it (XML)
CREATE TABLE IF NOT EXISTS TC_MSGARCHIVE (
    msg_id       CHAR(36)        CHARACTER SET ascii NOT NULL PRIMARY KEY,
    room_jid     VARBINARY(1536) NOT NULL,
    seq          BIGINT          NOT NULL,
    from_jid     VARCHAR(3071)   NOT NULL,
    nickname     VARBINARY(1023) NOT NULL,
    sent_date    DATETIME(6)     NOT NULL,
    subject      LONGTEXT,
    body_len     BIGINT          NOT NULL,
    message_len  BIGINT          NOT NULL,
    body_text    LONGTEXT        CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    message_text LONGTEXT        NOT NULL,
    -- Transcript order within a room (paging, counting), a nickname's messages, a period.
    KEY tc_msgarchive_room_seq (room_jid, seq),
    KEY tc_msgarchive_room_nick_seq (room_jid, nickname, seq),
    KEY tc_msgarchive_room_date (room_jid, sent_date),
    FULLTEXT KEY tc_msgarchive_body (body_text)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

SET SESSION innodb_ft_enable_stopword = @imbus_ft_enable_stopword;

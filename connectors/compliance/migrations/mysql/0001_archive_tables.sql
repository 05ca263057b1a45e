-- imbus compliance archive, MySQL 8 / MariaDB 10.5 or newer.
-- utf8mb4 with binary collation: every Unicode character (astral planes included) is
-- stored and compared exactly. LONGTEXT holds a whole stanza (up to 4 GiB), so nothing
-- is ever cut. record_id (a UUID v5 of the event id and the recipient) makes every insert
-- idempotent.

CREATE TABLE IF NOT EXISTS JM (
    record_id    CHAR(36)      CHARACTER SET ascii NOT NULL PRIMARY KEY,
    event_id     CHAR(36)      CHARACTER SET ascii NOT NULL,
    to_jid       VARCHAR(3071) NOT NULL,
    from_jid     VARCHAR(3071) NOT NULL,
    sent_date    DATETIME(6)   NOT NULL,
    subject      LONGTEXT,
    thread_id    LONGTEXT,
    msg_type     VARCHAR(16)   NOT NULL,
    direction    CHAR(1)       NOT NULL,
    origin       VARCHAR(16)   NOT NULL,
    body_len     BIGINT        NOT NULL,
    message_len  BIGINT        NOT NULL,
    body_text    LONGTEXT,
    message_text LONGTEXT      NOT NULL,
    KEY jm_to_date (to_jid(191), sent_date),
    KEY jm_from_date (from_jid(191), sent_date),
    KEY jm_date (sent_date)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS TC_MSGARCHIVE (
    record_id    CHAR(36)      CHARACTER SET ascii NOT NULL PRIMARY KEY,
    msg_id       CHAR(36)      CHARACTER SET ascii NOT NULL,
    room_jid     VARCHAR(3071),
    to_jid       VARCHAR(3071) NOT NULL,
    from_jid     VARCHAR(3071) NOT NULL,
    nickname     VARCHAR(1023),
    sent_date    DATETIME(6)   NOT NULL,
    subject      LONGTEXT,
    msg_type     VARCHAR(16)   NOT NULL,
    direction    CHAR(1)       NOT NULL,
    origin       VARCHAR(16)   NOT NULL,
    body_len     BIGINT        NOT NULL,
    message_len  BIGINT        NOT NULL,
    body_text    LONGTEXT,
    message_text LONGTEXT      NOT NULL,
    KEY tc_msgarchive_room_date (room_jid(191), sent_date),
    KEY tc_msgarchive_to_date (to_jid(191), sent_date),
    KEY tc_msgarchive_date (sent_date)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- longlink PostgreSQL store, version 1: the same tables and meaning as the embedded store
-- (crates/store/src/sqlite/schema.sql, v2), plus token revocations.
-- Unsigned 32-bit values (appcode, msgtype) are BIGINT; msgids are assigned by the store and
-- never negative; log_id is the u64 bit pattern stored as BIGINT. uids, devices and client
-- message ids use the "C" collation: they are opaque bytes to longlink, and byte order keeps
-- the B-tree comparisons cheap and the same on every server whatever its locale.

-- One row per message. An s2c push has one row for all its recipients (to_uid = '').
CREATE TABLE messages (
    msgid         BIGINT   PRIMARY KEY,
    to_appcode    BIGINT   NOT NULL,
    to_uid        TEXT     COLLATE "C" NOT NULL,
    from_appcode  BIGINT   NOT NULL,
    from_uid      TEXT     COLLATE "C" NOT NULL,
    from_device   TEXT     COLLATE "C" NOT NULL,
    client_msg_id TEXT     COLLATE "C" NOT NULL,
    msgtype       BIGINT   NOT NULL,
    content_type  INTEGER  NOT NULL,
    senddate      BIGINT   NOT NULL,            -- Unix ms, the writing node's clock
    state         SMALLINT NOT NULL DEFAULT 0,  -- 0 stored, 1 acked by a receiver device
    msgcontent    BYTEA    NOT NULL,
    log_id        BIGINT   NOT NULL,
    prev_msgid    BIGINT   NOT NULL DEFAULT 0   -- the conversation's previous msgid (0 = first)
);

-- The receiver's offline inbox; its primary key is the (owner appcode, uid, msgid) index that
-- a cursor pull scans (msgid > cursor, ascending), for c2c and s2c alike.
CREATE TABLE inbox (
    owner_appcode BIGINT NOT NULL,
    owner_uid     TEXT   COLLATE "C" NOT NULL,
    msgid         BIGINT NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, msgid)
);

-- Each user's own copy of a conversation: history pages are range scans of the primary key
-- (owner, peer, msgid) either way; a message to oneself has one row.
CREATE TABLE history (
    owner_appcode BIGINT NOT NULL,
    owner_uid     TEXT   COLLATE "C" NOT NULL,
    peer_appcode  BIGINT NOT NULL,
    peer_uid      TEXT   COLLATE "C" NOT NULL,
    msgid         BIGINT NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, peer_appcode, peer_uid, msgid)
);

-- Delivery acks per receiver device: the NOT EXISTS probe of a pull.
CREATE TABLE acks (
    owner_appcode BIGINT NOT NULL,
    owner_uid     TEXT   COLLATE "C" NOT NULL,
    device        TEXT   COLLATE "C" NOT NULL,
    msgid         BIGINT NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, device, msgid)
);

-- Pushes per receiver device (stored -> pushed -> acked); informational.
CREATE TABLE pushes (
    owner_appcode BIGINT NOT NULL,
    owner_uid     TEXT   COLLATE "C" NOT NULL,
    device        TEXT   COLLATE "C" NOT NULL,
    msgid         BIGINT NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, device, msgid)
);

-- Idempotency keys, written in the same transaction as the message they name.
CREATE TABLE idempotency_keys (
    from_appcode  BIGINT NOT NULL,
    from_uid      TEXT   COLLATE "C" NOT NULL,
    from_device   TEXT   COLLATE "C" NOT NULL,
    client_msg_id TEXT   COLLATE "C" NOT NULL,
    msgid         BIGINT NOT NULL,
    senddate      BIGINT NOT NULL,
    PRIMARY KEY (from_appcode, from_uid, from_device, client_msg_id)
);

-- Read marks: owner has read the conversation with peer up to msgid; only moves forward.
CREATE TABLE read_marks (
    owner_appcode BIGINT NOT NULL,
    owner_uid     TEXT   COLLATE "C" NOT NULL,
    peer_appcode  BIGINT NOT NULL,
    peer_uid      TEXT   COLLATE "C" NOT NULL,
    msgid         BIGINT NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, peer_appcode, peer_uid)
);

-- Token revocations (TokenRevocations): tokens of (appcode, uid) issued before before_ms are
-- revoked. Every process keeps the set in memory, refreshed by NOTIFY longlink_revocations.
CREATE TABLE token_revocations (
    appcode   BIGINT NOT NULL,
    uid       TEXT   COLLATE "C" NOT NULL,
    before_ms BIGINT NOT NULL,
    PRIMARY KEY (appcode, uid)
);

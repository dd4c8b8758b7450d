-- FROZEN: the whole schema of version 2, as builds of that version created it. Only the
-- upgrade tests use it (to make a version 1 or 2 file); the live schema is schema.sql.
-- longlink embedded store, schema version 2 (PRAGMA user_version); upgrade_2.sql turns a
-- version 1 database into version 2.
-- Every key starts with the appcode (tenant), then the uid. Ids are INTEGER (i64); msgids are
-- assigned by the store and never negative, log_id is the u64 bit pattern stored as i64.

-- One row per message (seed 001 "离线消息存储"). msgid is the rowid, so the table is a B-tree
-- keyed by msgid; rows carry the content blob (up to the frame limit), which is why it is not
-- a WITHOUT ROWID table (SQLite recommends those only for small rows).
CREATE TABLE IF NOT EXISTS messages (
    msgid         INTEGER PRIMARY KEY,
    to_appcode    INTEGER NOT NULL,
    to_uid        TEXT    NOT NULL,
    from_appcode  INTEGER NOT NULL,
    from_uid      TEXT    NOT NULL,
    from_device   TEXT    NOT NULL,
    client_msg_id TEXT    NOT NULL,
    msgtype       INTEGER NOT NULL,
    content_type  INTEGER NOT NULL,
    senddate      INTEGER NOT NULL,  -- Unix ms, server clock
    state         INTEGER NOT NULL DEFAULT 0,  -- 0 stored, 1 acked by at least one receiver device
    msgcontent    BLOB    NOT NULL,
    log_id        INTEGER NOT NULL,
    prev_msgid    INTEGER NOT NULL DEFAULT 0  -- the conversation's previous msgid (0 = first)
) STRICT;

-- The receiver's offline inbox: pull_offline is one range scan of (owner, msgid > cursor).
CREATE TABLE IF NOT EXISTS inbox (
    owner_appcode INTEGER NOT NULL,
    owner_uid     TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, msgid)
) WITHOUT ROWID, STRICT;

-- Each user's own copy of a conversation (seed 003 "在线消息"): one row per owner, so both
-- users' lists stand alone; a message to oneself has one row.
CREATE TABLE IF NOT EXISTS history (
    owner_appcode INTEGER NOT NULL,
    owner_uid     TEXT    NOT NULL,
    peer_appcode  INTEGER NOT NULL,
    peer_uid      TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, peer_appcode, peer_uid, msgid)
) WITHOUT ROWID, STRICT;

-- Delivery acks per receiver device (MSG_ACK): pull_offline skips rows found here.
CREATE TABLE IF NOT EXISTS acks (
    owner_appcode INTEGER NOT NULL,
    owner_uid     TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, device, msgid)
) WITHOUT ROWID, STRICT;

-- Pushes per receiver device (stored → pushed → acked): informational, written without
-- waiting; pull_offline does not read it.
CREATE TABLE IF NOT EXISTS pushes (
    owner_appcode INTEGER NOT NULL,
    owner_uid     TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, device, msgid)
) WITHOUT ROWID, STRICT;

-- Idempotency keys, written in the same transaction as the message they name.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    from_appcode  INTEGER NOT NULL,
    from_uid      TEXT    NOT NULL,
    from_device   TEXT    NOT NULL,
    client_msg_id TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    senddate      INTEGER NOT NULL,
    PRIMARY KEY (from_appcode, from_uid, from_device, client_msg_id)
) WITHOUT ROWID, STRICT;

-- Read marks (MARK_READ): owner has read the conversation with peer up to msgid. One row per
-- (owner, peer), shared by all of owner's devices; the mark only moves forward.
CREATE TABLE IF NOT EXISTS read_marks (
    owner_appcode INTEGER NOT NULL,
    owner_uid     TEXT    NOT NULL,
    peer_appcode  INTEGER NOT NULL,
    peer_uid      TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, peer_appcode, peer_uid)
) WITHOUT ROWID, STRICT;

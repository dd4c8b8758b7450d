-- longlink embedded store, schema version 3 (PRAGMA user_version); upgrade_2.sql turns a
-- version 1 database into version 2, upgrade_3.sql version 2 into version 3.
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

-- The receiver's offline inbox and, next to each entry, its delivery state per receiver device
-- (schema version 3; before, `pushes` and `acks` were tables of their own):
--   kind 0: the entry itself (device '', state 0): msgid is in owner's inbox;
--   kind 1: one receiver device's state for it: 1 pushed to a session of that device,
--           2 acknowledged by it (MSG_ACK); no row = stored, not pushed yet.
-- Why one table: the key starts with (owner, msgid), so a message's entry, its push record
-- and its ack land on the same B-tree leaf, the owner's newest one. A commit then dirties one
-- page per receiver for all three instead of one in each of three trees; a WAL commit writes
-- every dirty page whole, so this is most of what a message costs the writer.
-- pull_offline is one range scan of (owner, msgid > cursor) taking the kind 0 rows and
-- probing the adjacent kind 1 row of the asking device.
CREATE TABLE IF NOT EXISTS inbox (
    owner_appcode INTEGER NOT NULL,
    owner_uid     TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    kind          INTEGER NOT NULL,  -- 0 entry, 1 device state
    device        TEXT    NOT NULL,  -- '' for kind 0
    state         INTEGER NOT NULL,  -- kind 0: 0; kind 1: 1 pushed, 2 acked
    PRIMARY KEY (owner_appcode, owner_uid, msgid, kind, device)
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

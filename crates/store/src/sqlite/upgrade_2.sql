-- Schema version 1 -> 2: read marks (MARK_READ, CONVERSATIONS). Same as in schema.sql.
CREATE TABLE IF NOT EXISTS read_marks (
    owner_appcode INTEGER NOT NULL,
    owner_uid     TEXT    NOT NULL,
    peer_appcode  INTEGER NOT NULL,
    peer_uid      TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, peer_appcode, peer_uid)
) WITHOUT ROWID, STRICT;

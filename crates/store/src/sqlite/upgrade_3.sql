-- Schema version 2 -> 3: the inbox, the push records (`pushes`) and the delivery acks (`acks`)
-- become one table, `inbox`, keyed (owner, msgid, kind, device): see schema.sql for why.
-- Every row is carried over: an inbox row becomes kind 0, a push record kind 1 state 1, an
-- ack kind 1 state 2 (an ack wins over a push record of the same device and message).
ALTER TABLE inbox RENAME TO inbox_v2;
CREATE TABLE inbox (
    owner_appcode INTEGER NOT NULL,
    owner_uid     TEXT    NOT NULL,
    msgid         INTEGER NOT NULL,
    kind          INTEGER NOT NULL,
    device        TEXT    NOT NULL,
    state         INTEGER NOT NULL,
    PRIMARY KEY (owner_appcode, owner_uid, msgid, kind, device)
) WITHOUT ROWID, STRICT;
INSERT INTO inbox (owner_appcode, owner_uid, msgid, kind, device, state)
    SELECT owner_appcode, owner_uid, msgid, 0, '', 0 FROM inbox_v2;
INSERT INTO inbox (owner_appcode, owner_uid, msgid, kind, device, state)
    SELECT owner_appcode, owner_uid, msgid, 1, device, 1 FROM pushes WHERE true
    ON CONFLICT DO NOTHING;
INSERT INTO inbox (owner_appcode, owner_uid, msgid, kind, device, state)
    SELECT owner_appcode, owner_uid, msgid, 1, device, 2 FROM acks WHERE true
    ON CONFLICT DO UPDATE SET state = 2;
DROP TABLE inbox_v2;
DROP TABLE pushes;
DROP TABLE acks;

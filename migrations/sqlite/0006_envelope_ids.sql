-- The ids of stored envelopes move out of `envelopes` into two tables of their own, so that
-- ingest stops inserting into a B-tree keyed by a hash at every envelope. An id is a SHA-256:
-- each insert landed on a random page of the unique index, and a group of a few thousand
-- envelopes dirtied (and wrote to the WAL) a few thousand of its pages. At 1M envelopes that
-- index cost about a fifth of ingest.
--
-- New ids go to `envelope_ids_recent`, which stays small (at most about 65,536 rows), so the
-- pages a group dirties are few. Every 65,536 envelopes the writer moves the recent ids into
-- `envelope_ids` in key order, in the same transaction as the group that crossed the mark:
-- each page of the large table is then written once per merge, not once per group. An id is in
-- exactly one of the two tables in every snapshot; a read by id looks in both.
--
-- SQLite cannot drop a UNIQUE constraint in place: the table is rebuilt (a copy of every
-- envelope, once).
CREATE TABLE envelopes_rebuilt (
    seq         INTEGER PRIMARY KEY, -- assigned by the single writer: max + 1
    id          BLOB    NOT NULL,    -- unique: found through envelope_ids / envelope_ids_recent
    kind        INTEGER NOT NULL,
    signer      BLOB    NOT NULL,
    slot        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    bytes       BLOB    NOT NULL
);
INSERT INTO envelopes_rebuilt (seq, id, kind, signer, slot, created_at, received_at, bytes)
    SELECT seq, id, kind, signer, slot, created_at, received_at, bytes FROM envelopes ORDER BY seq;
DROP TABLE envelopes;
ALTER TABLE envelopes_rebuilt RENAME TO envelopes;

CREATE TABLE envelope_ids (
    id  BLOB    PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO envelope_ids (id, seq) SELECT id, seq FROM envelopes ORDER BY id;

CREATE TABLE envelope_ids_recent (
    id  BLOB    PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;

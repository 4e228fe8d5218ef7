-- The ids of stored envelopes move out of `envelopes` into two tables of their own, as on
-- SQLite (see migrations/sqlite/0006_envelope_ids.sql for why): new ids go to the small
-- `envelope_ids_recent`, and every 65,536 envelopes the writer moves them into `envelope_ids`
-- in key order. An id is in exactly one of the two tables in every snapshot; a read by id
-- looks in both. The same SQL serves both databases.
ALTER TABLE envelopes DROP CONSTRAINT envelopes_id_key;

CREATE TABLE envelope_ids (
    id  BYTEA  PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO envelope_ids (id, seq) SELECT id, seq FROM envelopes ORDER BY id;

CREATE TABLE envelope_ids_recent (
    id  BYTEA  PRIMARY KEY,
    seq BIGINT NOT NULL
);

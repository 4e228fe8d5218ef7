-- No query reads envelopes by (signer, slot): the current version of a slot is found through
-- `current`. The index cost every ingest a B-tree insert of about 70 bytes at a random place.
DROP INDEX IF EXISTS envelopes_signer_slot;

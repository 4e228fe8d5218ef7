-- `current (kind, signer)` cost every ingest a B-tree insert at a random place (it is keyed by
-- the signer). A seller's listings are found through the primary key (signer, slot). The one
-- query by kind alone that must stay quick reads the newest profiles when the server starts;
-- a partial index on the profiles' rows (kind 1) serves it and costs listings nothing.
DROP INDEX IF EXISTS current_kind_signer;
CREATE INDEX current_profiles ON current (seq) WHERE kind = 1;

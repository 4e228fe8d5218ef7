-- Paging through the current objects in ingest order (peer back-fill, index rebuild) without
-- sorting the whole table for every page.
CREATE INDEX current_seq ON current (seq);

-- The store: every accepted envelope, byte for byte, in ingest order. Everything else in this
-- database (current, ratings, moderators) is derived from it and can be rebuilt.
CREATE TABLE envelopes (
    seq         INTEGER PRIMARY KEY, -- assigned by the single writer: max + 1
    id          BLOB    NOT NULL UNIQUE,
    kind        INTEGER NOT NULL,
    signer      BLOB    NOT NULL,
    slot        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    bytes       BLOB    NOT NULL
);
CREATE INDEX envelopes_signer_slot ON envelopes (signer, slot);

-- The winning version of every replaceable slot (signer, slot).
CREATE TABLE current (
    signer     BLOB    NOT NULL,
    slot       TEXT    NOT NULL,
    kind       INTEGER NOT NULL,
    id         BLOB    NOT NULL,
    seq        INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    tombstone  INTEGER NOT NULL,
    PRIMARY KEY (signer, slot)
);
CREATE INDEX current_kind_signer ON current (kind, signer);

-- Current ratings, one row each, for aggregates.
CREATE TABLE ratings (
    id          BLOB    PRIMARY KEY,
    subject     BLOB    NOT NULL,
    role        INTEGER NOT NULL,
    overall     INTEGER NOT NULL,
    quality     INTEGER NOT NULL,
    description INTEGER NOT NULL,
    delivery    INTEGER NOT NULL,
    service     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX ratings_subject ON ratings (subject, role);

-- Current profiles that offer moderation.
CREATE TABLE moderators (
    signer       BLOB    PRIMARY KEY,
    id           BLOB    NOT NULL,
    languages    TEXT    NOT NULL,
    fee_type     INTEGER NOT NULL,
    fee_fixed    INTEGER NOT NULL,
    fee_currency TEXT    NOT NULL,
    fee_bp       INTEGER NOT NULL
);

-- The store: every accepted envelope, byte for byte, in ingest order. Everything else in this
-- database (current, ratings, moderators) is derived from it and can be rebuilt.
CREATE TABLE envelopes (
    seq         BIGINT  PRIMARY KEY, -- assigned by the single writer: max + 1
    id          BYTEA   NOT NULL UNIQUE,
    kind        BIGINT  NOT NULL,
    signer      BYTEA   NOT NULL,
    slot        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    received_at BIGINT  NOT NULL,
    bytes       BYTEA   NOT NULL
);
CREATE INDEX envelopes_signer_slot ON envelopes (signer, slot);

-- The winning version of every replaceable slot (signer, slot).
CREATE TABLE current (
    signer     BYTEA   NOT NULL,
    slot       TEXT    NOT NULL,
    kind       BIGINT  NOT NULL,
    id         BYTEA   NOT NULL,
    seq        BIGINT  NOT NULL,
    created_at BIGINT  NOT NULL,
    tombstone  BIGINT  NOT NULL,
    PRIMARY KEY (signer, slot)
);
CREATE INDEX current_kind_signer ON current (kind, signer);

-- Current ratings, one row each, for aggregates.
CREATE TABLE ratings (
    id          BYTEA   PRIMARY KEY,
    subject     BYTEA   NOT NULL,
    role        BIGINT  NOT NULL,
    overall     BIGINT  NOT NULL,
    quality     BIGINT  NOT NULL,
    description BIGINT  NOT NULL,
    delivery    BIGINT  NOT NULL,
    service     BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX ratings_subject ON ratings (subject, role);

-- Current profiles that offer moderation.
CREATE TABLE moderators (
    signer       BYTEA   PRIMARY KEY,
    id           BYTEA   NOT NULL,
    languages    TEXT    NOT NULL,
    fee_type     BIGINT  NOT NULL,
    fee_fixed    BIGINT  NOT NULL,
    fee_currency TEXT    NOT NULL,
    fee_bp       BIGINT  NOT NULL
);

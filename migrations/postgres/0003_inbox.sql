-- Inboxes: sealed private messages held for their recipients until fetched and acknowledged.
-- The server never sees plaintext; it files each message by recipient and keeps it until the
-- recipient acknowledges it or it expires.
CREATE TABLE inbox (
    seq         BIGSERIAL PRIMARY KEY,   -- arrival order, for paging
    id          BYTEA  NOT NULL UNIQUE,  -- SHA-256 of the sealed bytes
    recipient   BYTEA  NOT NULL,         -- 32-byte identity key
    bytes       BYTEA  NOT NULL,         -- the SealedMessage, as received
    size        BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX inbox_recipient_seq ON inbox (recipient, seq);
CREATE INDEX inbox_expires_at ON inbox (expires_at);

-- Ids of acknowledged messages, kept until the message would have expired, so that a late copy
-- (a retry, or a replica from another inbox server) is not delivered twice. Keyed by recipient
-- too, so one person's acknowledgement never blocks a message for another.
CREATE TABLE inbox_delivered (
    id         BYTEA  NOT NULL,
    recipient  BYTEA  NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (id, recipient)
);
CREATE INDEX inbox_delivered_expires_at ON inbox_delivered (expires_at);

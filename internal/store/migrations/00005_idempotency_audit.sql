-- Idempotency keys (hashed with their caller; answers sealed) and the audit
-- trail.

-- +goose Up
CREATE TABLE idempotency_keys (
    key_hash     TEXT    NOT NULL PRIMARY KEY,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL DEFAULT 0, -- 0 while the first request is in flight
    sealed_body  TEXT,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

CREATE TABLE audit_events (
    id            TEXT   NOT NULL PRIMARY KEY,
    at            BIGINT NOT NULL,
    actor         TEXT   NOT NULL,
    action        TEXT   NOT NULL,
    connection_id TEXT   NOT NULL DEFAULT '',
    client_ip     TEXT   NOT NULL DEFAULT '',
    request_id    TEXT   NOT NULL DEFAULT '',
    detail        TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_at ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_connection ON audit_events (connection_id, at DESC, id DESC);
CREATE INDEX audit_events_actor ON audit_events (actor, at DESC, id DESC);

-- +goose Down
DROP TABLE audit_events;
DROP TABLE idempotency_keys;

-- Connect sessions: short-lived credentials for one end user's browser. Only
-- the SHA-256 of a session token is stored.

-- +goose Up
CREATE TABLE connect_sessions (
    id          TEXT   NOT NULL PRIMARY KEY,
    token_hash  TEXT   NOT NULL UNIQUE,
    end_user_id TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX connect_sessions_expires ON connect_sessions (expires_at);

-- +goose Down
DROP TABLE connect_sessions;

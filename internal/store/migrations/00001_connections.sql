-- Connections between an app's end users and their Mattermost accounts.
-- Times are microseconds since the Unix epoch (UTC) in BIGINT columns: exact,
-- ordered the same in every dialect, and free of driver time-format quirks.

-- +goose Up
CREATE TABLE connections (
    id                  TEXT    NOT NULL PRIMARY KEY,
    server_url          TEXT    NOT NULL,
    end_user_id         TEXT,
    status              TEXT    NOT NULL CHECK (status IN ('active', 'invalid', 'revoked')),
    mattermost_user_id  TEXT    NOT NULL,
    mattermost_username TEXT    NOT NULL,
    mattermost_email    TEXT    NOT NULL,
    server_version      TEXT    NOT NULL,
    token_hint          TEXT    NOT NULL,
    sealed_token        TEXT,
    generation          BIGINT  NOT NULL,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    last_verified_at    BIGINT,
    revoked_at          BIGINT,
    last_error_code     TEXT,
    last_error_message  TEXT,
    last_error_at       BIGINT,
    CHECK ((status = 'revoked') = (sealed_token IS NULL))
);

-- The reconnect rule: one live connection per server, Mattermost user and end
-- user, where a missing end user counts as one value ('' is never a valid id).
CREATE UNIQUE INDEX connections_live_key
    ON connections (server_url, mattermost_user_id, COALESCE(end_user_id, ''))
    WHERE status <> 'revoked';

-- Keyset paging, newest first, overall and per end user.
CREATE INDEX connections_created ON connections (created_at DESC, id DESC);
CREATE INDEX connections_end_user_created ON connections (end_user_id, created_at DESC, id DESC);

-- +goose Down
DROP TABLE connections;

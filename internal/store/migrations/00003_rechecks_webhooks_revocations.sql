-- Background re-checks, webhook events written with the changes that cause
-- them (an outbox), and revocations of tokens in Mattermost itself.

-- +goose Up
-- last_checked_at: the start of the newest check, whatever its outcome.
-- next_check_at: when the background re-check is due (existing rows: now).
-- invalid_since: when the connection last turned invalid.
-- mattermost_token_id: the token's id in Mattermost, once proven.
-- event_seq: the sequence number of the connection's newest event.
ALTER TABLE connections ADD COLUMN last_checked_at BIGINT;
ALTER TABLE connections ADD COLUMN next_check_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN invalid_since BIGINT;
ALTER TABLE connections ADD COLUMN mattermost_token_id TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN upstream_revocation_status TEXT;
ALTER TABLE connections ADD COLUMN upstream_revocation_message TEXT;
ALTER TABLE connections ADD COLUMN upstream_revocation_at BIGINT;
-- mattermost_is_bot: the token is a bot account's.
ALTER TABLE connections ADD COLUMN mattermost_is_bot BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE connections SET last_checked_at = COALESCE(last_error_at, last_verified_at);
UPDATE connections SET invalid_since = COALESCE(last_error_at, updated_at) WHERE status = 'invalid';

-- The sweep's query: due live connections, most overdue first.
CREATE INDEX connections_due ON connections (next_check_at) WHERE status <> 'revoked';
-- Retention: revoked connections, oldest revoke first.
CREATE INDEX connections_revoked ON connections (revoked_at) WHERE status = 'revoked';

CREATE TABLE webhook_events (
    id                   TEXT    NOT NULL PRIMARY KEY,
    connection_id        TEXT    NOT NULL, -- '' for a ping
    sequence             BIGINT  NOT NULL,
    type                 TEXT    NOT NULL,
    occurred_at          BIGINT  NOT NULL,
    snapshot             TEXT    NOT NULL, -- the connection after the change, without its token
    status               TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      BIGINT  NOT NULL,
    deadline             BIGINT  NOT NULL,
    last_attempt_at      BIGINT,
    last_response_status INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT    NOT NULL DEFAULT '',
    created_at           BIGINT  NOT NULL,
    settled_at           BIGINT
);
-- The dispatcher's query: due pending events (status first, so the planner
-- prefers it over the listing index by status), and each connection's queue.
CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at);
CREATE INDEX webhook_events_queue ON webhook_events (connection_id, sequence) WHERE status = 'pending';
-- Listing, newest first, overall and by status; pruning settled events.
CREATE INDEX webhook_events_created ON webhook_events (created_at DESC, id DESC);
CREATE INDEX webhook_events_status_created ON webhook_events (status, created_at DESC, id DESC);
CREATE INDEX webhook_events_settled ON webhook_events (settled_at) WHERE status <> 'pending';

-- Tokens still to be revoked in Mattermost after the connection was
-- revoked here, sealed as they were on the connection.
CREATE TABLE pending_revocations (
    connection_id   TEXT    NOT NULL PRIMARY KEY,
    server_url      TEXT    NOT NULL,
    token_id        TEXT    NOT NULL,
    sealed_token    TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    next_attempt_at BIGINT  NOT NULL
);
CREATE INDEX pending_revocations_due ON pending_revocations (next_attempt_at);

-- +goose Down
DROP TABLE pending_revocations;
DROP TABLE webhook_events;
DROP INDEX connections_revoked;
DROP INDEX connections_due;
ALTER TABLE connections DROP COLUMN mattermost_is_bot;
ALTER TABLE connections DROP COLUMN upstream_revocation_at;
ALTER TABLE connections DROP COLUMN upstream_revocation_message;
ALTER TABLE connections DROP COLUMN upstream_revocation_status;
ALTER TABLE connections DROP COLUMN event_seq;
ALTER TABLE connections DROP COLUMN mattermost_token_id;
ALTER TABLE connections DROP COLUMN invalid_since;
ALTER TABLE connections DROP COLUMN next_check_at;
ALTER TABLE connections DROP COLUMN last_checked_at;

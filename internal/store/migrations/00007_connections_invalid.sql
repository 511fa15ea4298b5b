-- Invalid connections, for the gauge of connections by status: it counts
-- each status in a partial index's entries (live ones in connections_due,
-- revoked ones in connections_revoked, invalid ones here), where a pass
-- over the table took 183-229 ms (SQLite) at a million connections, on
-- every replica every 15 s. Building it took 126 ms at a million.

-- +goose Up
CREATE INDEX connections_invalid ON connections (invalid_since) WHERE status = 'invalid';

-- +goose Down
DROP INDEX connections_invalid;

package connection

import (
	"context"
	"time"
)

// Store keeps connections. Every implementation must pass the contract
// suite in internal/store/storetest. Any method may return an error wrapping
// ErrUnavailable when the database cannot answer; nothing is written then.
type Store interface {
	// Create inserts a new connection. It returns ErrConflict when a
	// connection that is not revoked already exists for the same server URL,
	// Mattermost user and end user (a nil end user counts as one value).
	Create(ctx context.Context, c Connection) error

	// Get returns the connection with that id, or ErrNotFound.
	Get(ctx context.Context, id string) (Connection, error)

	// FindLive returns the connection that is not revoked for this server URL,
	// Mattermost user and end user, or ErrNotFound.
	FindLive(ctx context.Context, serverURL, mattermostUserID string, endUserID *string) (Connection, error)

	// List returns up to f.Limit connections matching f, newest first
	// (created_at, then id, both descending), starting after f.After.
	List(ctx context.Context, f ListFilter) ([]Connection, error)

	// Update writes every mutable field of c (status, token, user, version,
	// times, last error, generation) if the stored row still has generation
	// expect and is not revoked; otherwise it returns ErrConflict (ErrNotFound
	// when there is no such id) and changes nothing.
	Update(ctx context.Context, c Connection, expect int64) error

	// Ping tells whether the database answers.
	Ping(ctx context.Context) error
}

// ListFilter narrows and pages a listing. Nil fields do not filter.
type ListFilter struct {
	EndUserID *string
	Status    *Status
	Limit     int
	After     *Position
}

// Position is a place in the newest-first order, used for keyset paging.
type Position struct {
	CreatedAt time.Time
	ID        string
}

// Identity is what a Mattermost server says about a token it accepted.
// ServerURL is where its API really answered, which may be a subpath of the
// URL that was checked.
type Identity struct {
	ServerURL     string
	User          MattermostUser
	ServerVersion string
}

// Verifier proves a token against a Mattermost server. It returns an
// *UpstreamError for every answer or failure that is not an acceptance, and
// other errors only for mmconnect's own faults. It must never put the token
// in an error.
type Verifier interface {
	Verify(ctx context.Context, serverURL, token string) (Identity, error)
}

// Sealer encrypts tokens at rest. Open returns an error if the sealed bytes
// were altered, sealed with another associated data, or with a key it does
// not hold.
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
	Open(sealed, associatedData []byte) ([]byte, error)
}

package connection

import (
	"context"
	"time"
)

// Store keeps connections. Every implementation must pass the contract
// suite in internal/store/storetest. Any method may return an error wrapping
// ErrUnavailable when the database cannot answer; nothing is written then.
type Store interface {
	// Create inserts a new connection and what ch records, in one
	// transaction, numbering ch's events from 1. It returns ErrConflict
	// when a connection that is not revoked already exists for the same
	// server URL, Mattermost user and end user (a nil end user counts as
	// one value), and otherwise ErrTooManyConnections when the end user
	// has ch.MaxLivePerEndUser live ones; nothing is written then. The
	// conflict comes first, so a caller can try the insert before looking
	// for the connection to reconnect to, even at the cap.
	Create(ctx context.Context, c Connection, ch Change) error

	// Get returns the connection with that id, or ErrNotFound.
	Get(ctx context.Context, id string) (Connection, error)

	// FindLive returns the connection that is not revoked for this server URL,
	// Mattermost user and end user, or ErrNotFound.
	FindLive(ctx context.Context, serverURL, mattermostUserID string, endUserID *string) (Connection, error)

	// List returns up to f.Limit connections matching f, newest first
	// (created_at, then id, both descending), starting after f.After.
	List(ctx context.Context, f ListFilter) ([]Connection, error)

	// Update writes every mutable field of c, and what ch records, in one
	// transaction, if the stored row still has generation expect, is not
	// revoked, and (for a write that keeps the generation: a check's
	// outcome) has no check newer than c.LastCheckedAt; otherwise it
	// returns ErrConflict (ErrNotFound when there is no such id) and
	// changes nothing. The token column is written only when c.Generation
	// differs from expect (a new token or a revoke): a status change never
	// writes it. ch's events are numbered after the connection's last.
	Update(ctx context.Context, c Connection, expect int64, ch Change) error

	// ClaimDue returns up to limit connections that are not revoked and
	// whose NextCheckAt is at or before now, most overdue first, each
	// claimed for this caller by moving its NextCheckAt to next(): a
	// connection another caller claimed meanwhile is left out, so each due
	// connection is checked once per round however many replicas ask.
	ClaimDue(ctx context.Context, now time.Time, limit int, next func() time.Time) ([]Connection, error)

	// Reschedule moves a live connection's NextCheckAt to at.
	Reschedule(ctx context.Context, id string, at time.Time) error

	// ClaimRevocations returns up to limit pending revocations due at or
	// before now, each claimed by moving its NextAttemptAt to lease.
	ClaimRevocations(ctx context.Context, now time.Time, limit int, lease time.Time) ([]PendingRevocation, error)

	// SettleRevocation records the outcome of revoking a token upstream on
	// the (revoked) connection; when r is final its pending revocation is
	// deleted with the token it held, otherwise it is kept for another
	// attempt at next. Errors: ErrNotFound when no pending revocation
	// exists for the connection.
	SettleRevocation(ctx context.Context, connectionID string, r UpstreamRevocation, final bool, attempts int, next time.Time) error

	// Purgeable returns up to limit revoked connections revoked before
	// cutoff with no pending revocation and no event still to deliver.
	Purgeable(ctx context.Context, cutoff time.Time, limit int) ([]Connection, error)

	// Delete removes a revoked connection with generation expect and
	// records ch's events, in one transaction. Errors: ErrConflict when
	// the row is not such a connection any more, ErrNotFound.
	Delete(ctx context.Context, c Connection, ch Change) error

	// Ping tells whether the database answers.
	Ping(ctx context.Context) error

	// SealingKeyIDs lists the ids of the keys that sealed stored values,
	// from a small table kept with every seal (cheap at any size).
	SealingKeyIDs(ctx context.Context) ([]string, error)

	// HasConnections tells whether any connection is stored.
	HasConnections(ctx context.Context) (bool, error)

	// SealedAfter returns up to limit sealed values (tokens of connections,
	// and of pending revocations) whose row id sorts after afterID, in id
	// order, for re-sealing in batches.
	SealedAfter(ctx context.Context, afterID string, limit int) ([]Sealed, error)

	// Reseal replaces old's sealed value with value (sealed with keyID) if
	// it is still stored unchanged; a connection's generation grows by
	// one. Errors: ErrConflict when it changed meanwhile.
	Reseal(ctx context.Context, old Sealed, value []byte, keyID string, at time.Time) error

	// SealingKeyUse counts the stored values each key id seals, and drops
	// key ids that seal nothing any more from the table of ids in use.
	SealingKeyUse(ctx context.Context) (map[string]int64, error)
}

// Sealed is one stored sealed value: a connection's token, the token of a
// pending revocation (whose ID is its connection's), or another sealed
// value such as a stored idempotent answer. ID is its associated data.
type Sealed struct {
	ID         string
	Kind       SealedKind
	Generation int64
	Value      []byte
}

// SealedKind says where a sealed value is kept.
type SealedKind string

// The places sealed values are kept.
const (
	SealedToken       SealedKind = "token"
	SealedRevocation  SealedKind = "revocation"
	SealedIdempotency SealedKind = "idempotency"
)

// ListFilter narrows and pages a listing. Nil fields do not filter.
type ListFilter struct {
	EndUserID *string
	Status    *Status
	// Live leaves revoked connections out.
	Live  bool
	Limit int
	After *Position
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
	// AnsweredAt is the server's own clock (its Date header) when it
	// answered; zero if it sent none.
	AnsweredAt time.Time
}

// Verifier proves a token against a Mattermost server. It returns an
// *UpstreamError for every answer or failure that is not an acceptance, and
// other errors only for mmconnect's own faults. It must never put the token
// in an error.
type Verifier interface {
	Verify(ctx context.Context, serverURL, token string) (Identity, error)
}

// Revoker revokes tokens in Mattermost itself.
type Revoker interface {
	// TokenID names the token's id in Mattermost when it can be proven to be
	// this token's, and "" otherwise. firstUse is the server's clock when
	// the token was just checked. The answer it reads holds other sessions'
	// secrets: implementations must not keep or log it. Errors: any failure
	// to ask (the caller treats the id as unknown).
	TokenID(ctx context.Context, serverURL, token string, firstUse time.Time) (string, error)

	// RevokeToken revokes the token with tokenID, authenticated as the
	// token itself. Errors: *UpstreamError with CodeNotPermitted (the
	// account may not revoke tokens), CodeTokenUnknown (no such token),
	// CodeTokenRejected (the token no longer works), or a code that means
	// Mattermost could not be asked (try again later).
	RevokeToken(ctx context.Context, serverURL, token, tokenID string) error
}

// Sealer encrypts tokens at rest. Open returns an error if the sealed bytes
// were altered or sealed with another associated data, and one wrapping
// ErrSealingKeyMissing (naming the key id) if sealed with a key it does
// not hold.
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
	Open(sealed, associatedData []byte) ([]byte, error)
	// SealedWith names the key id a sealed value was sealed with ("" if it
	// is not a sealed value).
	SealedWith(sealed []byte) string
	// Primary is the key id new values are sealed with.
	Primary() string
}

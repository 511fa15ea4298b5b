// Package connection is the domain of mmconnect: a Connection between one
// end user of an app and their account on a Mattermost server, the rules for
// what a valid server URL and token look like, and the service that proves,
// stores, re-checks, hands over and revokes those connections.
//
// It depends on nothing but the standard library; storage, sealing and the
// upstream check are reached through the small interfaces in store.go.
package connection

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
	"time"
)

// Provider is the only provider mmconnect speaks to; it is part of every
// connection so that clients can be written for more than one provider.
const Provider = "mattermost"

// Status says whether a connection's token can be used.
type Status string

// The statuses a connection moves through. Revoked is final: nothing makes a
// revoked connection active again, a reconnect creates a new one instead.
const (
	StatusActive  Status = "active"
	StatusInvalid Status = "invalid"
	StatusRevoked Status = "revoked"
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusActive, StatusInvalid, StatusRevoked:
		return true
	}
	return false
}

// MattermostUser is who the token belongs to, as the server said.
type MattermostUser struct {
	ID       string
	Username string
	Email    string
	// IsBot: the token is a bot account's.
	IsBot bool
}

// LastError is the most recent failed check of a connection, kept so that an
// app can tell its user what to fix without checking again.
type LastError struct {
	Code    string
	Message string
	At      time.Time
}

// RevocationStatus is what became of a revoked connection's token in
// Mattermost itself.
type RevocationStatus string

// The outcomes of revoking a token in Mattermost.
const (
	// RevocationRevoked: Mattermost revoked the token (or no longer
	// accepted it).
	RevocationRevoked RevocationStatus = "revoked"
	// RevocationNotPermitted: the account may not revoke its own tokens.
	RevocationNotPermitted RevocationStatus = "not_permitted"
	// RevocationTokenUnknown: which token to revoke was never proven, so
	// none was revoked.
	RevocationTokenUnknown RevocationStatus = "token_unknown"
	// RevocationPending: Mattermost could not be reached; it is retried.
	RevocationPending RevocationStatus = "pending"
	// RevocationFailed: retries ran out; the token was erased unrevoked.
	RevocationFailed RevocationStatus = "failed"
	// RevocationSkipped: the caller or the operator chose a local revoke.
	RevocationSkipped RevocationStatus = "skipped"
)

// UpstreamRevocation is the outcome of revoking the token in Mattermost.
type UpstreamRevocation struct {
	Status  RevocationStatus
	Message string
	At      time.Time
}

// Connection is one end user's proven link to one Mattermost account.
//
// SealedToken is the token encrypted by a Sealer with the connection id as
// associated data; it is nil once the connection is revoked. Generation
// grows with every token change and revocation so that a slow re-check can
// tell whether what it checked is still what is stored.
type Connection struct {
	ID             string
	ServerURL      string
	EndUserID      *string
	Status         Status
	MattermostUser MattermostUser
	ServerVersion  string
	TokenHint      string
	SealedToken    []byte
	Generation     int64
	CreatedAt      time.Time
	UpdatedAt      time.Time
	LastVerifiedAt *time.Time
	// LastCheckedAt is the start of the newest check, whatever its outcome;
	// a check's outcome is recorded only if no newer one was.
	LastCheckedAt *time.Time
	// InvalidSince is when the connection last turned invalid; nil unless
	// it is invalid.
	InvalidSince *time.Time
	// NextCheckAt is when the background re-check is due.
	NextCheckAt time.Time
	// TokenID is Mattermost's id of the token, set only once proven, so a
	// revoke never names another token.
	TokenID            string
	RevokedAt          *time.Time
	LastError          *LastError
	UpstreamRevocation *UpstreamRevocation
}

// Credentials are what the app's backend needs to call Mattermost itself,
// with how sure mmconnect is that the token still works.
type Credentials struct {
	ServerURL      string
	Token          string
	Status         Status
	LastVerifiedAt *time.Time
}

// idEncoding is lower-case base32 without padding: URL-safe, and easy to
// read aloud.
var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// RandomID returns prefix and 128 random bits, the form of every id
// mmconnect mints (connections, connect sessions, request ids).
func RandomID(prefix string) string {
	var b [16]byte
	randomBits(b[:])
	return prefix + strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// randomBits fills b from crypto/rand.
func randomBits(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic("connection: no randomness: " + err.Error()) // crypto/rand never fails on supported systems
	}
}

// orderedEncoding has RandomID's characters in their byte order, so the
// text of an OrderedID sorts as its bits do.
var orderedEncoding = base32.NewEncoding("234567abcdefghijklmnopqrstuvwxyz").WithPadding(base32.NoPadding)

// OrderedID returns prefix and 128 bits in the form of RandomID: the
// first 48 bits are the time in milliseconds and the other 80 random. Ids
// minted later sort after (by the millisecond), so each insert lands on the
// same few pages of every index keyed by the id, where random ids dirty a
// page of each at random: over a million rows that halved the time of a
// create with its audit row (BenchmarkCreateIDs). The time it shows is no
// secret: every row keyed by one also shows when it was made. Ids that
// grant access (connect sessions) stay wholly random.
func OrderedID(prefix string) string {
	var b [16]byte
	randomBits(b[6:])
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	return FormatOrderedID(prefix, b)
}

// FormatOrderedID is prefix and bits in OrderedID's form, whose text sorts
// as the bits do (ids made elsewhere, such as a seed's, in order).
func FormatOrderedID(prefix string, bits [16]byte) string {
	return prefix + orderedEncoding.EncodeToString(bits[:])
}

// NewID returns a fresh connection id: "conn_" and an OrderedID's bits.
func NewID() string { return OrderedID("conn_") }

// Truncate brings t to UTC and microsecond precision, the precision every
// store keeps, so that what the service returns equals what it reads back.
func Truncate(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

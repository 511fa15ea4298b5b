// Package session is the connect session: a short-lived credential that an
// app's backend opens for one of its users, so that the user's browser can
// connect a Mattermost account without ever holding the app's API key.
//
// The token is shown once, when the session opens; only its SHA-256 is
// stored, so a copy of the database opens no session.
package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// TokenPrefix marks session tokens, so they are told apart from API keys
// and recognised if pasted somewhere they do not belong.
const TokenPrefix = "mmcs_"

var (
	// ErrNotFound: no session has that id or token.
	ErrNotFound = errors.New("session not found")
	// ErrExpired: the session existed but its time is up.
	ErrExpired = errors.New("session expired")
)

// Session lets one end user's browser connect and manage only that end
// user's connections until ExpiresAt.
type Session struct {
	ID        string
	TokenHash string
	EndUserID string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Store keeps sessions. Methods may return errors wrapping
// connection.ErrUnavailable when the database cannot answer.
type Store interface {
	// CreateSession inserts s.
	CreateSession(ctx context.Context, s Session) error
	// SessionByTokenHash returns the session with that token hash, or ErrNotFound.
	SessionByTokenHash(ctx context.Context, hash string) (Session, error)
	// DeleteSession removes a session, or returns ErrNotFound.
	DeleteSession(ctx context.Context, id string) error
	// DeleteSessionsExpiredBefore removes sessions that expired before t.
	DeleteSessionsExpiredBefore(ctx context.Context, t time.Time) error
}

// keepExpired is how long an expired session is kept, so that its user is
// told "expired" rather than "unknown".
const keepExpired = 24 * time.Hour

// Service opens, checks and ends sessions. Every rule holds through the
// Store, so any replica can check a session another one opened.
type Service struct {
	store Store
	ttl   time.Duration
	now   func() time.Time
}

// NewService makes sessions that last ttl; now is the clock (nil: time.Now).
func NewService(store Store, ttl time.Duration, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, ttl: ttl, now: now}
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("session: no randomness: " + err.Error()) // crypto/rand never fails on supported systems
	}
	return b
}

// HashToken is what is stored of a token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Open starts a session for endUserID and returns it with its token, which
// is not kept. Errors: *connection.ValidationError, ErrUnavailable.
func (s *Service) Open(ctx context.Context, endUserID string) (Session, string, error) {
	if fe := connection.ValidateEndUserID(&endUserID); fe != nil {
		return Session{}, "", &connection.ValidationError{Fields: []connection.FieldError{*fe}}
	}
	now := connection.Truncate(s.now())
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(random(32))
	sess := Session{
		ID:        connection.RandomID("cs_"),
		TokenHash: HashToken(token),
		EndUserID: endUserID,
		CreatedAt: now,
		ExpiresAt: connection.Truncate(now.Add(s.ttl)),
	}
	// Housekeeping rides along with the rare write; a failure here must not
	// stop a session from opening.
	_ = s.store.DeleteSessionsExpiredBefore(ctx, now.Add(-keepExpired))
	if err := s.store.CreateSession(ctx, sess); err != nil {
		return Session{}, "", err
	}
	return sess, token, nil
}

// Authenticate returns the live session for token.
// Errors: ErrNotFound, ErrExpired, ErrUnavailable.
func (s *Service) Authenticate(ctx context.Context, token string) (Session, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return Session{}, ErrNotFound
	}
	sess, err := s.store.SessionByTokenHash(ctx, HashToken(token))
	if err != nil {
		return Session{}, err
	}
	if !s.now().Before(sess.ExpiresAt) {
		return Session{}, ErrExpired
	}
	return sess, nil
}

// End removes a session at once. Errors: ErrNotFound, ErrUnavailable.
func (s *Service) End(ctx context.Context, id string) error {
	return s.store.DeleteSession(ctx, id)
}

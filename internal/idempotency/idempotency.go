// Package idempotency makes a create safe to retry: the first answer to a
// request with an Idempotency-Key is kept for a day and replayed for the
// same key and body (the Stripe rule), without doing the work again. Keys
// are scoped to the caller and stored hashed; answers are sealed like
// tokens (a connect session's answer holds its token).
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// TTL is how long an answer is kept for replay.
const TTL = 24 * time.Hour

// Abandoned is how long a request may hold its key in flight; after that
// (a process that died mid-request) another request with the key takes it
// over.
const Abandoned = 5 * time.Minute

// Errors of Begin.
var (
	// ErrReused: the key was used with another request body.
	ErrReused = errors.New("idempotency key reused with another request")
	// ErrInUse: a request with the key is still being answered.
	ErrInUse = errors.New("idempotency key in use")
)

// Record is one key's state. Status is 0 while the first request is in
// flight.
type Record struct {
	Key         string // the hash of caller and key
	RequestHash string
	Status      int
	SealedBody  []byte
	CreatedAt   time.Time
	ExpiresAt   time.Time
}

// Store keeps records. Every method may return connection.ErrUnavailable.
type Store interface {
	// ClaimKey inserts r unless its key exists; it returns the record that
	// holds the key then (nil when r was inserted). A record past its
	// ExpiresAt, or in flight since before staleBefore, is replaced.
	ClaimKey(ctx context.Context, r Record, staleBefore time.Time) (*Record, error)
	// FinishKey stores the answer of the request that holds the key.
	FinishKey(ctx context.Context, key string, status int, sealedBody []byte, sealingKey string) error
	// ReleaseKey deletes a key still in flight, so the request can be
	// retried with it.
	ReleaseKey(ctx context.Context, key string) error
	// PruneKeys deletes records expired before t.
	PruneKeys(ctx context.Context, t time.Time) (int, error)
}

// Service applies the rule.
type Service struct {
	store  Store
	sealer connection.Sealer
	now    func() time.Time
}

// NewService builds the service; now is the clock (nil: time.Now).
func NewService(store Store, sealer connection.Sealer, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, sealer: sealer, now: now}
}

// Replay is a stored answer.
type Replay struct {
	Status int
	Body   []byte
}

// Hash names a caller's key without keeping it.
func Hash(scope, key string) string {
	sum := sha256.Sum256([]byte("mmconnect idempotency\x00" + scope + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

// RequestHash names a request: its method, path and body.
func RequestHash(method, path string, body []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\x00", method, path)
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Begin claims key for a request. It returns a Replay when the key already
// has an answer for the same request, nil when the caller should go on and
// later Finish or Release. Errors: ErrReused, ErrInUse, the store's.
func (s *Service) Begin(ctx context.Context, key, requestHash string) (*Replay, error) {
	now := connection.Truncate(s.now())
	held, err := s.store.ClaimKey(ctx, Record{Key: key, RequestHash: requestHash, CreatedAt: now, ExpiresAt: now.Add(TTL)}, now.Add(-Abandoned))
	switch {
	case err != nil:
		return nil, err
	case held == nil:
		return nil, nil
	case held.RequestHash != requestHash:
		return nil, ErrReused
	case held.Status == 0:
		return nil, ErrInUse
	}
	body, err := s.sealer.Open(held.SealedBody, []byte(key))
	if err != nil {
		return nil, fmt.Errorf("open a stored answer: %w", err)
	}
	return &Replay{Status: held.Status, Body: body}, nil
}

// Final tells the answers that are kept: successes and the client's own
// mistakes, but not a conflict or a rate limit (409, 429), which a retry
// may get past, nor a server failure.
func Final(status int) bool {
	return status >= 200 && status < 300 || status >= 400 && status < 500 && status != 409 && status != 429
}

// Finish keeps a final answer for replay, or releases the key otherwise.
// Errors: the store's, the sealer's.
func (s *Service) Finish(ctx context.Context, key string, status int, body []byte) error {
	if !Final(status) {
		return s.store.ReleaseKey(ctx, key)
	}
	sealed, err := s.sealer.Seal(body, []byte(key))
	if err != nil {
		return err
	}
	return s.store.FinishKey(ctx, key, status, sealed, s.sealer.SealedWith(sealed))
}

// Release frees a key whose request failed before it had an answer.
func (s *Service) Release(ctx context.Context, key string) error { return s.store.ReleaseKey(ctx, key) }

// Prune deletes expired records. Errors: the store's.
func (s *Service) Prune(ctx context.Context) (int, error) { return s.store.PruneKeys(ctx, s.now()) }

// Package audit is the trail of who did what: every create, reconnect,
// verify, credentials read, revoke, and connect session opened or ended,
// with its time, actor, client address and request id, and never a secret.
package audit

import (
	"context"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// Actions recorded.
const (
	ConnectionCreated    = connection.AuditConnectionCreated
	ConnectionReconnect  = connection.AuditConnectionReconnect
	ConnectionVerify     = "connection.verify"
	ConnectionCredential = "connection.credentials"
	ConnectionRevoke     = "connection.revoke"
	SessionOpen          = "session.open"
	SessionEnd           = "session.end"
	ConnectionProxy      = "connection.proxy"
)

// Event is one recorded action (defined by the connection domain, whose
// connects record theirs in the transaction of the connection).
type Event = connection.AuditEvent

// Filter narrows a listing; empty fields do not filter.
type Filter struct {
	ConnectionID, Actor, Action string
	Since                       *time.Time
	Limit                       int
	After                       *connection.Position
}

// Store keeps the trail. Every method may return connection.ErrUnavailable.
type Store interface {
	AddAuditEvent(ctx context.Context, e Event) error
	// ListAuditEvents returns events matching f, newest first.
	ListAuditEvents(ctx context.Context, f Filter) ([]Event, error)
	// PruneAuditEvents deletes events before t.
	PruneAuditEvents(ctx context.Context, t time.Time) (int, error)
}

// Service records and lists the trail.
type Service struct {
	store     Store
	now       func() time.Time
	retention time.Duration
}

// NewService keeps events for retention (zero keeps them); now is the
// clock (nil: time.Now).
func NewService(store Store, retention time.Duration, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, now: now, retention: retention}
}

// Record adds an event, now. Errors: the store's.
func (s *Service) Record(ctx context.Context, e Event) error {
	e.ID = connection.OrderedID(connection.AuditIDPrefix)
	e.At = connection.Truncate(s.now())
	return s.store.AddAuditEvent(ctx, e)
}

// Query is a listing request; Cursor is a previous page's NextCursor.
type Query struct {
	ConnectionID, Actor, Action string
	Since                       *time.Time
	Limit                       int
	Cursor                      string
}

// Page is one page of events, newest first.
type Page struct {
	Events     []Event
	NextCursor string
}

// List pages through the trail. Errors: connection.ErrBadCursor, the
// store's.
func (s *Service) List(ctx context.Context, q Query) (Page, error) {
	es, next, err := connection.ReadPage(q.Limit, q.Cursor, "aud_", func(after *connection.Position, n int) ([]Event, error) {
		return s.store.ListAuditEvents(ctx, Filter{ConnectionID: q.ConnectionID, Actor: q.Actor, Action: q.Action, Since: q.Since,
			After: after, Limit: n})
	}, func(e Event) connection.Position { return connection.Position{CreatedAt: e.At, ID: e.ID} })
	return Page{Events: es, NextCursor: next}, err
}

// Prune deletes events past the retention. Errors: the store's.
func (s *Service) Prune(ctx context.Context) (int, error) {
	if s.retention <= 0 {
		return 0, nil
	}
	return s.store.PruneAuditEvents(ctx, s.now().Add(-s.retention))
}

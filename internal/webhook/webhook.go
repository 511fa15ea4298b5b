// Package webhook delivers the events of connection changes to the app's
// webhook receiver, signed as Standard Webhooks prescribes
// (https://www.standardwebhooks.com), at least once, in order per
// connection. Events are written by the connection store in the same
// transaction as the change that caused them (an outbox); this package
// reads that outbox, delivers, and records each attempt.
package webhook

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// Status is where a delivery stands.
type Status string

// A delivery is pending until the receiver answers 2xx (delivered) or
// retries run out (failed).
const (
	StatusPending   Status = "pending"
	StatusDelivered Status = "delivered"
	StatusFailed    Status = "failed"
)

// Statuses are every Status, each also an attempt's outcome as
// Options.Observe is told it. A fresh slice each call.
func Statuses() []Status { return []Status{StatusPending, StatusDelivered, StatusFailed} }

// Valid reports whether s is a known status.
func (s Status) Valid() bool { return slices.Contains(Statuses(), s) }

// Errors of the delivery store and dispatcher.
var (
	// ErrNotFound: no delivery has that id.
	ErrNotFound = errors.New("webhook delivery not found")
	// ErrNotFailed: only a delivery that failed for good can be retried.
	ErrNotFailed = errors.New("webhook delivery has not failed")
	// ErrDisabled: no webhook URL is configured.
	ErrDisabled = errors.New("webhooks are not configured")
)

// Delivery is one event and what became of sending it.
type Delivery struct {
	Event        connection.Event
	ConnectionID string // empty for a ping
	Status       Status
	Attempts     int
	// NextAttemptAt is when a pending delivery is tried (again).
	NextAttemptAt time.Time
	// Deadline is when a pending delivery stops being retried: RetryWindow
	// after its first attempt.
	Deadline time.Time
	// LastAttemptAt, LastResponseStatus (0: no answer) and LastError
	// describe the newest attempt.
	LastAttemptAt      *time.Time
	LastResponseStatus int
	LastError          string
	CreatedAt          time.Time
	SettledAt          *time.Time
}

// Outcome is the result of one attempt.
type Outcome struct {
	At             time.Time
	ResponseStatus int
	Error          string
	// Status is delivered, failed, or pending with NextAttemptAt.
	Status        Status
	NextAttemptAt time.Time
	// Deadline is when retries stop (set from the first attempt on).
	Deadline time.Time
}

// ListFilter narrows and pages a listing, newest first.
type ListFilter struct {
	Status *Status
	Limit  int
	After  *connection.Position
}

// Store keeps the outbox. Every method may return an error wrapping
// connection.ErrUnavailable.
type Store interface {
	// AddDelivery records a delivery of an event that belongs to no change
	// (a ping).
	AddDelivery(ctx context.Context, d Delivery) error
	// ClaimDeliveries returns up to limit pending deliveries due at or
	// before now that are first in their connection's queue (no pending
	// delivery of the same connection has a lower sequence), each claimed
	// by moving its NextAttemptAt to lease: a delivery is sent by one
	// replica at a time, and a connection's next event waits for the one
	// before it.
	ClaimDeliveries(ctx context.Context, now time.Time, limit int, lease time.Time) ([]Delivery, error)
	// RecordAttempt records an attempt's outcome on a delivery claimed
	// with lease. Errors: ErrNotFound.
	RecordAttempt(ctx context.Context, id string, lease time.Time, o Outcome) error
	// GetDelivery returns one delivery. Errors: ErrNotFound.
	GetDelivery(ctx context.Context, id string) (Delivery, error)
	// ListDeliveries pages through deliveries, newest first.
	ListDeliveries(ctx context.Context, f ListFilter) ([]Delivery, error)
	// Requeue makes a failed delivery pending again, due at now with a new
	// deadline. Errors: ErrNotFound, ErrNotFailed.
	Requeue(ctx context.Context, id string, now, deadline time.Time) (Delivery, error)
	// PruneSettled deletes deliveries settled before cutoff and returns
	// how many.
	PruneSettled(ctx context.Context, cutoff time.Time) (int, error)
}

// RetryWindow is how long a delivery is retried before it fails for good.
const RetryWindow = 24 * time.Hour

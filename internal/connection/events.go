package connection

import "time"

// EventType names a change an app can subscribe to.
type EventType string

// The events a connection's changes cause, and the webhook test event.
const (
	EventCreated     EventType = "connection.created"
	EventReconnected EventType = "connection.reconnected" // token replaced
	EventInvalid     EventType = "connection.invalid"
	EventRecovered   EventType = "connection.recovered"
	EventRevoked     EventType = "connection.revoked"
	EventDeleted     EventType = "connection.deleted" // retention
	EventPing        EventType = "ping"
)

// Event is one change to tell the app about. The store writes it in the
// same transaction as the change and numbers it: Sequence grows by one with
// each event of the same connection. Connection is the state after the
// change, without its token.
type Event struct {
	ID         string
	Type       EventType
	At         time.Time
	Sequence   int64
	Connection Connection
}

// Change is what one write records beside the connection itself, in the
// same transaction.
type Change struct {
	Events []Event
	// Revocation, when set, keeps the token sealed until Mattermost has
	// revoked it (or retries run out).
	Revocation *PendingRevocation
	// MaxLivePerEndUser, when positive on a Create of a connection with an
	// end user, refuses it with ErrTooManyConnections if that end user
	// already has that many live connections (checked in the same
	// transaction, serialised per end user).
	MaxLivePerEndUser int
	// SealingKey is the key id of a value the change seals, recorded in the
	// store's small table of key ids in use, so a start can check that
	// every one is configured without reading every row.
	SealingKey string
	// Audit, when set, is written to the audit trail in the same
	// transaction: the trail holds an action exactly when it happened.
	Audit *AuditEvent
}

// PendingRevocation is a token still to be revoked in Mattermost after the
// connection itself was revoked. SealedToken is sealed with the connection
// id as associated data, as it was on the connection.
type PendingRevocation struct {
	ConnectionID  string
	ServerURL     string
	TokenID       string
	SealedToken   []byte
	Attempts      int
	CreatedAt     time.Time
	NextAttemptAt time.Time
}

// NewEventID returns a fresh event id, used as the webhook-id header.
func NewEventID() string { return OrderedID("evt_") }

// eventsFor names the events that a change from old (nil for a new
// connection) to c causes: the one rule for what is worth telling.
func eventsFor(old *Connection, c Connection) []EventType {
	switch {
	case old == nil:
		return []EventType{EventCreated}
	case c.Status == StatusRevoked && old.Status != StatusRevoked:
		return []EventType{EventRevoked}
	case c.Generation != old.Generation:
		return []EventType{EventReconnected}
	case c.Status == StatusInvalid && old.Status != StatusInvalid:
		return []EventType{EventInvalid}
	case c.Status == StatusActive && old.Status == StatusInvalid:
		return []EventType{EventRecovered}
	}
	return nil
}

// Snapshot is c as an event carries it: everything but the token.
func Snapshot(c Connection) Connection {
	c.SealedToken = nil
	return c
}

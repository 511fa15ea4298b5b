package connection

import "time"

// AuditEvent is one entry of the audit trail (the audit package lists and
// prunes them; its Event is this type). Actor is an API key's name or
// "session:<end user>"; Detail is a short outcome (a status), never a
// secret.
type AuditEvent struct {
	ID           string
	At           time.Time
	Actor        string
	Action       string
	ConnectionID string
	ClientIP     string
	RequestID    string
	Detail       string
}

// The audit actions of a connect, which the service records itself, in the
// transaction of the connection it stores.
const (
	AuditConnectionCreated   = "connection.create"
	AuditConnectionReconnect = "connection.reconnect"
)

// AuditIDPrefix begins every audit event's id.
const AuditIDPrefix = "aud_"

// auditFor completes who (who asked: actor, client address, request id)
// into the audit event of a connect that stored c, or nil without who.
func auditFor(who *AuditEvent, c Connection, created bool, now time.Time) *AuditEvent {
	if who == nil {
		return nil
	}
	e := *who
	e.ID, e.At, e.ConnectionID, e.Detail = OrderedID(AuditIDPrefix), now, c.ID, string(c.Status)
	e.Action = AuditConnectionReconnect
	if created {
		e.Action = AuditConnectionCreated
	}
	return &e
}

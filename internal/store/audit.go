package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/audit"
)

var _ audit.Store = (*Store)(nil)

type auditRow struct {
	ID           string `gorm:"primaryKey"`
	At           int64
	Actor        string
	Action       string
	ConnectionID string
	ClientIP     string
	RequestID    string
	Detail       string
}

func (auditRow) TableName() string { return "audit_events" }

// AddAuditEvent implements audit.Store. A request that reads a token or
// goes through the proxy waits for its row: on SQLite it is one more
// write of the group commit, on PostgreSQL one round trip (batchTx),
// where GORM's transaction took three.
func (s *Store) AddAuditEvent(ctx context.Context, e audit.Event) error {
	ctx, cancel := s.op(ctx, "store.AddAuditEvent")
	defer cancel()
	var err error
	if s.dialect == "postgres" {
		err = s.batchTx(ctx, func(b *pgx.Batch) { b.Queue(s.auditStmt.query, auditValues(e)...) })
	} else {
		err = s.tx(ctx, func(tx *gorm.DB) error { return s.insertAudit(tx, e) })
	}
	return s.wrap("record audit event", err)
}

// insertAudit writes e in the transaction tx.
func (s *Store) insertAudit(tx *gorm.DB, e audit.Event) error {
	return s.auditStmt.exec(tx, auditValues(e)...)
}

// auditValues are e's columns in auditStmt's order.
func auditValues(e audit.Event) []any {
	return []any{e.ID, micros(e.At), e.Actor, e.Action, e.ConnectionID, e.ClientIP, e.RequestID, e.Detail}
}

// ListAuditEvents implements audit.Store.
func (s *Store) ListAuditEvents(ctx context.Context, f audit.Filter) ([]audit.Event, error) {
	ctx, cancel := s.op(ctx, "store.ListAuditEvents")
	defer cancel()
	var rows []auditRow
	if err := auditQuery(s.rdb.WithContext(ctx), f).Find(&rows).Error; err != nil {
		return nil, s.wrap("list audit events", err)
	}
	out := make([]audit.Event, len(rows))
	for i, r := range rows {
		out[i] = audit.Event{ID: r.ID, At: fromMicros(r.At), Actor: r.Actor, Action: r.Action,
			ConnectionID: r.ConnectionID, ClientIP: r.ClientIP, RequestID: r.RequestID, Detail: r.Detail}
	}
	return out, nil
}

// auditQuery is the audit listing for f on db; its keyset position is a
// row-value comparison, so the index range starts at the page.
func auditQuery(db *gorm.DB, f audit.Filter) *gorm.DB {
	q := db.Model(&auditRow{})
	if f.ConnectionID != "" {
		q = q.Where("connection_id = ?", f.ConnectionID)
	}
	if f.Actor != "" {
		q = q.Where("actor = ?", f.Actor)
	}
	if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if f.Since != nil {
		q = q.Where("at >= ?", micros(*f.Since))
	}
	if a := f.After; a != nil {
		q = q.Where("(at, id) < (?, ?)", micros(a.CreatedAt), a.ID)
	}
	return q.Order("at DESC, id DESC").Limit(f.Limit)
}

// pruneAuditQuery deletes a batch of audit rows past the retention,
// chosen through audit_events_at (prune).
const pruneAuditQuery = "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < ? LIMIT ?)"

// PruneAuditEvents implements audit.Store, a batch at a time (prune).
func (s *Store) PruneAuditEvents(ctx context.Context, t time.Time) (int, error) {
	return s.prune(ctx, "PruneAuditEvents", pruneAuditQuery, micros(t))
}

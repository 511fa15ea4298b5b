package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// eventRow is one event in the outbox; the snapshot is the connection's
// row (without its token) as JSON.
type eventRow struct {
	ID                 string `gorm:"primaryKey"`
	ConnectionID       string
	Sequence           int64
	Type               string
	OccurredAt         int64
	Snapshot           string
	Status             string
	Attempts           int
	NextAttemptAt      int64
	Deadline           int64
	LastAttemptAt      *int64
	LastResponseStatus int
	LastError          string
	CreatedAt          int64 `gorm:"autoCreateTime:false"`
	SettledAt          *int64
}

func (eventRow) TableName() string { return "webhook_events" }

// eventColumns are webhook_events' columns in the order of
// eventRow.values.
const eventColumns = "id, connection_id, sequence, type, occurred_at, snapshot, status, attempts, next_attempt_at, deadline, " +
	"last_attempt_at, last_response_status, last_error, created_at, settled_at"

func (r eventRow) values() []any {
	return []any{r.ID, r.ConnectionID, r.Sequence, r.Type, r.OccurredAt, r.Snapshot, r.Status, r.Attempts, r.NextAttemptAt,
		r.Deadline, r.LastAttemptAt, r.LastResponseStatus, r.LastError, r.CreatedAt, r.SettledAt}
}

type revocationRow struct {
	ConnectionID  string `gorm:"primaryKey"`
	ServerURL     string
	TokenID       string
	SealedToken   string
	Attempts      int
	CreatedAt     int64 `gorm:"autoCreateTime:false"`
	NextAttemptAt int64
}

func (revocationRow) TableName() string { return "pending_revocations" }

// newEventRow is an event as the outbox keeps it, pending and due now.
func newEventRow(connID string, ev connection.Event) (eventRow, error) {
	snap := toRow(connection.Snapshot(ev.Connection))
	snapshot, err := json.Marshal(snap)
	if err != nil {
		return eventRow{}, err
	}
	at := micros(ev.At)
	return eventRow{ID: ev.ID, ConnectionID: connID, Sequence: ev.Sequence, Type: string(ev.Type), OccurredAt: at,
		Snapshot: string(snapshot), Status: string(webhook.StatusPending), NextAttemptAt: at,
		Deadline: micros(ev.At.Add(webhook.RetryWindow)), CreatedAt: at}, nil
}

func fromEventRow(r eventRow) (webhook.Delivery, error) {
	d := webhook.Delivery{
		Event: connection.Event{ID: r.ID, Type: connection.EventType(r.Type), At: fromMicros(r.OccurredAt),
			Sequence: r.Sequence},
		ConnectionID:       r.ConnectionID,
		Status:             webhook.Status(r.Status),
		Attempts:           r.Attempts,
		NextAttemptAt:      fromMicros(r.NextAttemptAt),
		Deadline:           fromMicros(r.Deadline),
		LastAttemptAt:      timePtr(r.LastAttemptAt),
		LastResponseStatus: r.LastResponseStatus,
		LastError:          r.LastError,
		CreatedAt:          fromMicros(r.CreatedAt),
		SettledAt:          timePtr(r.SettledAt),
	}
	if r.ConnectionID != "" {
		var snap connectionRow
		if err := json.Unmarshal([]byte(r.Snapshot), &snap); err != nil {
			return webhook.Delivery{}, fmt.Errorf("event %s: snapshot: %w", r.ID, err)
		}
		d.Event.Connection = fromRow(snap)
	}
	return d, nil
}

// stmt is one statement of a write: a prepared hot write and its
// arguments.
type stmt struct {
	w    *writeStmt
	args []any
}

// changeStmts are the statements that record what a change records beside
// the connection, in its transaction: the events, numbered from firstSeq,
// its audit event, the sealing key it used and a pending upstream
// revocation. The one list serves both ways of running a write:
// recordChange runs it statement by statement, and a create on PostgreSQL
// sends it in one pipelined batch. Errors: an event's snapshot cannot be
// encoded.
func (s *Store) changeStmts(connID string, firstSeq int64, ch connection.Change) ([]stmt, error) {
	var out []stmt
	for i, ev := range ch.Events {
		ev.Sequence = firstSeq + int64(i)
		r, err := newEventRow(connID, ev)
		if err != nil {
			return nil, err
		}
		out = append(out, stmt{s.eventStmt, r.values()})
	}
	if e := ch.Audit; e != nil {
		out = append(out, stmt{s.auditStmt, auditValues(*e)})
	}
	if ch.SealingKey != "" {
		out = append(out, stmt{s.sealingKeyStmt, []any{ch.SealingKey}})
	}
	if p := ch.Revocation; p != nil {
		out = append(out, stmt{s.revocationStmt, []any{p.ConnectionID, p.ServerURL, p.TokenID, string(p.SealedToken), p.Attempts,
			micros(p.CreatedAt), micros(p.NextAttemptAt)}})
	}
	return out, nil
}

// recordChange writes what a change records beside the connection, inside
// its transaction tx (changeStmts). Errors: the statements'.
func (s *Store) recordChange(tx *gorm.DB, connID string, firstSeq int64, ch connection.Change) error {
	stmts, err := s.changeStmts(connID, firstSeq, ch)
	if err != nil {
		return err
	}
	return execAll(tx, stmts)
}

// execAll runs stmts in order in the transaction tx, stopping at the first
// error.
func execAll(tx *gorm.DB, stmts []stmt) error {
	for _, st := range stmts {
		if err := st.w.exec(tx, st.args...); err != nil {
			return err
		}
	}
	return nil
}

// dueQuery is the sweep's query, written to match the partial index
// connections_due (the literal status is part of the index's predicate).
const dueQuery = "SELECT * FROM connections WHERE status <> 'revoked' AND next_check_at <= ? ORDER BY next_check_at LIMIT ?"

// ClaimDue implements connection.Store: a conditional update per row moves
// next_check_at from the value read, so of several replicas that read the
// same row only one claims it; the same statements serve SQLite and
// PostgreSQL.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, limit int, next func() time.Time) ([]connection.Connection, error) {
	ctx, cancel := s.op(ctx, "store.ClaimDue")
	defer cancel()
	var rows []connectionRow
	if err := s.db.WithContext(ctx).Raw(dueQuery, micros(now), limit).Scan(&rows).Error; err != nil {
		return nil, s.wrap("find due connections", err)
	}
	var out []connection.Connection
	for _, r := range rows {
		n, err := s.exec(ctx, func(db *gorm.DB) *gorm.DB {
			return db.Model(&connectionRow{}).Where("id = ? AND next_check_at = ? AND status <> 'revoked'", r.ID, r.NextCheckAt).
				Update("next_check_at", micros(next()))
		})
		if err != nil {
			return out, s.wrap("claim due connection", err)
		}
		if n == 1 {
			out = append(out, fromRow(r))
		}
	}
	return out, nil
}

// Reschedule implements connection.Store.
func (s *Store) Reschedule(ctx context.Context, id string, at time.Time) error {
	ctx, cancel := s.op(ctx, "store.Reschedule")
	defer cancel()
	n, err := s.exec(ctx, func(db *gorm.DB) *gorm.DB {
		return db.Model(&connectionRow{}).Where("id = ? AND status <> 'revoked'", id).Update("next_check_at", micros(at))
	})
	if err != nil {
		return s.wrap("reschedule connection", err)
	}
	if n == 0 {
		return connection.ErrNotFound
	}
	return nil
}

// ClaimRevocations implements connection.Store.
func (s *Store) ClaimRevocations(ctx context.Context, now time.Time, limit int, lease time.Time) ([]connection.PendingRevocation, error) {
	ctx, cancel := s.op(ctx, "store.ClaimRevocations")
	defer cancel()
	var rows []revocationRow
	err := s.db.WithContext(ctx).Where("next_attempt_at <= ?", micros(now)).Order("next_attempt_at").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, s.wrap("find due revocations", err)
	}
	var out []connection.PendingRevocation
	for _, r := range rows {
		n, err := s.exec(ctx, func(db *gorm.DB) *gorm.DB {
			return db.Model(&revocationRow{}).Where("connection_id = ? AND next_attempt_at = ?", r.ConnectionID, r.NextAttemptAt).
				Update("next_attempt_at", micros(lease))
		})
		if err != nil {
			return out, s.wrap("claim revocation", err)
		}
		if n == 1 {
			out = append(out, connection.PendingRevocation{ConnectionID: r.ConnectionID, ServerURL: r.ServerURL,
				TokenID: r.TokenID, SealedToken: []byte(r.SealedToken), Attempts: r.Attempts,
				CreatedAt: fromMicros(r.CreatedAt), NextAttemptAt: fromMicros(micros(lease))})
		}
	}
	return out, nil
}

// SettleRevocation implements connection.Store.
func (s *Store) SettleRevocation(ctx context.Context, connectionID string, r connection.UpstreamRevocation, final bool, attempts int, next time.Time) error {
	ctx, cancel := s.op(ctx, "store.SettleRevocation")
	defer cancel()
	err := s.tx(ctx, func(tx *gorm.DB) error {
		q := tx.Where("connection_id = ?", connectionID)
		var res *gorm.DB
		if final {
			res = q.Delete(&revocationRow{})
		} else {
			res = q.Model(&revocationRow{}).Updates(map[string]any{"attempts": attempts, "next_attempt_at": micros(next)})
		}
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return connection.ErrNotFound
		}
		st := string(r.Status)
		return tx.Model(&connectionRow{}).Where("id = ?", connectionID).Updates(map[string]any{
			"upstream_revocation_status":  st,
			"upstream_revocation_message": r.Message,
			"upstream_revocation_at":      micros(r.At),
		}).Error
	})
	if errors.Is(err, connection.ErrNotFound) {
		return fmt.Errorf("settle revocation of %s: %w", connectionID, err)
	}
	return s.wrap("settle revocation", err)
}

// Purgeable implements connection.Store.
func (s *Store) Purgeable(ctx context.Context, cutoff time.Time, limit int) ([]connection.Connection, error) {
	ctx, cancel := s.op(ctx, "store.Purgeable")
	defer cancel()
	var rows []connectionRow
	err := s.db.WithContext(ctx).Raw(`SELECT * FROM connections c
		WHERE c.status = 'revoked' AND c.revoked_at < ?
		  AND NOT EXISTS (SELECT 1 FROM pending_revocations p WHERE p.connection_id = c.id)
		  AND NOT EXISTS (SELECT 1 FROM webhook_events e WHERE e.connection_id = c.id AND e.status = 'pending')
		ORDER BY c.revoked_at LIMIT ?`, micros(cutoff), limit).Scan(&rows).Error
	if err != nil {
		return nil, s.wrap("find purgeable connections", err)
	}
	out := make([]connection.Connection, len(rows))
	for i, r := range rows {
		out[i] = fromRow(r)
	}
	return out, nil
}

// Delete implements connection.Store.
func (s *Store) Delete(ctx context.Context, c connection.Connection, ch connection.Change) error {
	ctx, cancel := s.op(ctx, "store.Delete")
	defer cancel()
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var seq []int64
		err := tx.Model(&connectionRow{}).Where("id = ? AND generation = ? AND status = 'revoked'", c.ID, c.Generation).
			Pluck("event_seq", &seq).Error
		if err != nil {
			return err
		}
		if len(seq) != 1 {
			return fmt.Errorf("delete connection %s: %w", c.ID, connection.ErrConflict)
		}
		if err := tx.Where("id = ?", c.ID).Delete(&connectionRow{}).Error; err != nil {
			return err
		}
		return s.recordChange(tx, c.ID, seq[0]+1, ch)
	})
	if errors.Is(err, connection.ErrConflict) {
		return err
	}
	return s.wrap("delete connection", err)
}

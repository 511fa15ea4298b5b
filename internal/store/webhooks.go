package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/webhook"
)

var _ webhook.Store = (*Store)(nil)

// AddDelivery implements webhook.Store.
func (s *Store) AddDelivery(ctx context.Context, d webhook.Delivery) error {
	ctx, cancel := s.op(ctx, "store.AddDelivery")
	defer cancel()
	row, err := newEventRow(d.ConnectionID, d.Event)
	if err != nil {
		return err
	}
	if d.ConnectionID == "" {
		row.Snapshot = "{}"
	}
	return s.wrap("add webhook delivery", s.single(ctx, func(db *gorm.DB) error { return db.Create(&row).Error }))
}

// claimQuery finds due pending events that are first in their
// connection's queue; it is written to match webhook_events_due
// (status, next_attempt_at) and webhook_events_queue (whose predicate is
// the literal status).
const claimQuery = `SELECT * FROM webhook_events e
	WHERE e.status = 'pending' AND e.next_attempt_at <= ?
	  AND NOT EXISTS (SELECT 1 FROM webhook_events p
	                  WHERE p.connection_id = e.connection_id AND p.status = 'pending' AND p.sequence < e.sequence)
	ORDER BY e.next_attempt_at LIMIT ?`

// ClaimDeliveries implements webhook.Store.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, limit int, lease time.Time) ([]webhook.Delivery, error) {
	ctx, cancel := s.op(ctx, "store.ClaimDeliveries")
	defer cancel()
	var rows []eventRow
	if err := s.db.WithContext(ctx).Raw(claimQuery, micros(now), limit).Scan(&rows).Error; err != nil {
		return nil, s.wrap("find due webhook deliveries", err)
	}
	var out []webhook.Delivery
	for _, r := range rows {
		n, err := s.exec(ctx, func(db *gorm.DB) *gorm.DB {
			return db.Model(&eventRow{}).Where("id = ? AND status = 'pending' AND next_attempt_at = ?", r.ID, r.NextAttemptAt).
				Update("next_attempt_at", micros(lease))
		})
		if err != nil {
			return out, s.wrap("claim webhook delivery", err)
		}
		if n != 1 {
			continue
		}
		r.NextAttemptAt = micros(lease)
		d, err := fromEventRow(r)
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
	return out, nil
}

// RecordAttempt implements webhook.Store.
func (s *Store) RecordAttempt(ctx context.Context, id string, lease time.Time, o webhook.Outcome) error {
	ctx, cancel := s.op(ctx, "store.RecordAttempt")
	defer cancel()
	cols := map[string]any{
		"attempts":             gorm.Expr("attempts + 1"),
		"status":               string(o.Status),
		"last_attempt_at":      micros(o.At),
		"last_response_status": o.ResponseStatus,
		"last_error":           o.Error,
		"next_attempt_at":      micros(o.NextAttemptAt),
		"deadline":             micros(o.Deadline),
	}
	if o.Status != webhook.StatusPending {
		cols["settled_at"] = micros(o.At)
	}
	n, err := s.exec(ctx, func(db *gorm.DB) *gorm.DB {
		return db.Model(&eventRow{}).Where("id = ? AND status = 'pending' AND next_attempt_at = ?", id, micros(lease)).Updates(cols)
	})
	if err != nil {
		return s.wrap("record webhook attempt", err)
	}
	if n == 0 {
		return fmt.Errorf("record attempt of %s: %w", id, webhook.ErrNotFound)
	}
	return nil
}

// GetDelivery implements webhook.Store.
func (s *Store) GetDelivery(ctx context.Context, id string) (webhook.Delivery, error) {
	ctx, cancel := s.op(ctx, "store.GetDelivery")
	defer cancel()
	var row eventRow
	err := s.rdb.WithContext(ctx).Where("id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return webhook.Delivery{}, webhook.ErrNotFound
	}
	if err != nil {
		return webhook.Delivery{}, s.wrap("get webhook delivery", err)
	}
	return fromEventRow(row)
}

// ListDeliveries implements webhook.Store.
func (s *Store) ListDeliveries(ctx context.Context, f webhook.ListFilter) ([]webhook.Delivery, error) {
	ctx, cancel := s.op(ctx, "store.ListDeliveries")
	defer cancel()
	var rows []eventRow
	if err := deliveriesQuery(s.rdb.WithContext(ctx), f).Find(&rows).Error; err != nil {
		return nil, s.wrap("list webhook deliveries", err)
	}
	out := make([]webhook.Delivery, 0, len(rows))
	for _, r := range rows {
		d, err := fromEventRow(r)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// deliveriesQuery is the deliveries listing for f on db; its keyset
// position is a row-value comparison, so the index range starts at the
// page.
func deliveriesQuery(db *gorm.DB, f webhook.ListFilter) *gorm.DB {
	q := db.Model(&eventRow{})
	if f.Status != nil {
		q = q.Where("status = ?", string(*f.Status))
	}
	if a := f.After; a != nil {
		q = q.Where("(created_at, id) < (?, ?)", micros(a.CreatedAt), a.ID)
	}
	return q.Order("created_at DESC, id DESC").Limit(f.Limit)
}

// Requeue implements webhook.Store.
func (s *Store) Requeue(ctx context.Context, id string, now, deadline time.Time) (webhook.Delivery, error) {
	ctx, cancel := s.op(ctx, "store.Requeue")
	defer cancel()
	res := s.db.WithContext(ctx).Model(&eventRow{}).Where("id = ? AND status = 'failed'", id).Updates(map[string]any{
		"status": string(webhook.StatusPending), "next_attempt_at": micros(now), "deadline": micros(deadline), "settled_at": nil,
	})
	if res.Error != nil {
		return webhook.Delivery{}, s.wrap("requeue webhook delivery", res.Error)
	}
	d, err := s.GetDelivery(ctx, id)
	if err != nil {
		return webhook.Delivery{}, err
	}
	if res.RowsAffected == 0 {
		return webhook.Delivery{}, fmt.Errorf("requeue %s (%s): %w", id, d.Status, webhook.ErrNotFailed)
	}
	return d, nil
}

// pruneSettledQuery deletes a batch of deliveries settled before the
// cutoff, chosen through webhook_events_settled (prune).
const pruneSettledQuery = `DELETE FROM webhook_events WHERE id IN
	(SELECT id FROM webhook_events WHERE status <> 'pending' AND settled_at < ? LIMIT ?)`

// PruneSettled implements webhook.Store, a batch at a time (prune).
func (s *Store) PruneSettled(ctx context.Context, cutoff time.Time) (int, error) {
	return s.prune(ctx, "PruneSettled", pruneSettledQuery, micros(cutoff))
}

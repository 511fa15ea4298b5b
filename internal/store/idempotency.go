package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/idempotency"
)

var _ idempotency.Store = (*Store)(nil)

type idempotencyRow struct {
	KeyHash     string `gorm:"primaryKey"`
	RequestHash string
	Status      int
	SealedBody  *string
	CreatedAt   int64 `gorm:"autoCreateTime:false"`
	ExpiresAt   int64
}

func (idempotencyRow) TableName() string { return "idempotency_keys" }

// ClaimKey implements idempotency.Store: an insert that a concurrent one
// (from any replica) loses, then a conditional take-over of a record that
// expired or was abandoned in flight.
func (s *Store) ClaimKey(ctx context.Context, r idempotency.Record, staleBefore time.Time) (*idempotency.Record, error) {
	ctx, cancel := s.op(ctx, "store.ClaimKey")
	defer cancel()
	db := s.db.WithContext(ctx)
	n, err := s.exec(ctx, func(db *gorm.DB) *gorm.DB {
		return db.Exec(`INSERT INTO idempotency_keys (key_hash, request_hash, status, created_at, expires_at) VALUES (?, ?, 0, ?, ?)
		ON CONFLICT (key_hash) DO NOTHING`, r.Key, r.RequestHash, micros(r.CreatedAt), micros(r.ExpiresAt))
	})
	if err != nil {
		return nil, s.wrap("claim idempotency key", err)
	}
	if n == 1 {
		return nil, nil
	}
	var row idempotencyRow
	if err := db.Where("key_hash = ?", r.Key).Take(&row).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return s.ClaimKey(ctx, r, staleBefore) // released meanwhile
		}
		return nil, s.wrap("read idempotency key", err)
	}
	if row.ExpiresAt < micros(r.CreatedAt) || (row.Status == 0 && row.CreatedAt < micros(staleBefore)) {
		n, err := s.exec(ctx, func(db *gorm.DB) *gorm.DB {
			return db.Model(&idempotencyRow{}).Where("key_hash = ? AND created_at = ? AND status = ?", r.Key, row.CreatedAt, row.Status).
				Updates(map[string]any{"request_hash": r.RequestHash, "status": 0, "sealed_body": nil,
					"created_at": micros(r.CreatedAt), "expires_at": micros(r.ExpiresAt)})
		})
		if err != nil {
			return nil, s.wrap("take over idempotency key", err)
		}
		if n == 1 {
			return nil, nil
		}
		return s.ClaimKey(ctx, r, staleBefore)
	}
	out := &idempotency.Record{Key: row.KeyHash, RequestHash: row.RequestHash, Status: row.Status,
		CreatedAt: fromMicros(row.CreatedAt), ExpiresAt: fromMicros(row.ExpiresAt)}
	if row.SealedBody != nil {
		out.SealedBody = []byte(*row.SealedBody)
	}
	return out, nil
}

// FinishKey implements idempotency.Store. The answer and the key that
// sealed it are written in one transaction: on SQLite in the group
// commit, on PostgreSQL in one round trip (batchTx), where GORM's
// transaction took about six; the request is not done until it is.
func (s *Store) FinishKey(ctx context.Context, key string, status int, sealedBody []byte, sealingKey string) error {
	ctx, cancel := s.op(ctx, "store.FinishKey")
	defer cancel()
	body := string(sealedBody)
	finish := func(db *gorm.DB) *gorm.DB {
		return db.Model(&idempotencyRow{}).Where("key_hash = ? AND status = 0", key).
			Updates(map[string]any{"status": status, "sealed_body": &body})
	}
	var err error
	if s.dialect == "postgres" {
		update := s.dryRun(ctx, finish)
		err = s.batchTx(ctx, func(b *pgx.Batch) {
			b.Queue(update.SQL.String(), update.Vars...)
			b.Queue(s.sealingKeyStmt.query, sealingKey)
		})
	} else {
		err = s.tx(ctx, func(tx *gorm.DB) error {
			if err := finish(tx).Error; err != nil {
				return err
			}
			return s.sealingKeyStmt.exec(tx, sealingKey)
		})
	}
	return s.wrap("store an idempotent answer", err)
}

// ReleaseKey implements idempotency.Store.
func (s *Store) ReleaseKey(ctx context.Context, key string) error {
	ctx, cancel := s.op(ctx, "store.ReleaseKey")
	defer cancel()
	return s.wrap("release idempotency key", s.single(ctx, func(db *gorm.DB) error {
		return db.Where("key_hash = ? AND status = 0", key).Delete(&idempotencyRow{}).Error
	}))
}

// pruneKeysQuery deletes a batch of expired idempotency keys, chosen
// through idempotency_keys_expires (prune).
const pruneKeysQuery = "DELETE FROM idempotency_keys WHERE key_hash IN (SELECT key_hash FROM idempotency_keys WHERE expires_at < ? LIMIT ?)"

// PruneKeys implements idempotency.Store, a batch at a time (prune).
func (s *Store) PruneKeys(ctx context.Context, t time.Time) (int, error) {
	return s.prune(ctx, "PruneKeys", pruneKeysQuery, micros(t))
}

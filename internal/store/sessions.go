package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/session"
)

var _ session.Store = (*Store)(nil)

type sessionRow struct {
	ID        string `gorm:"primaryKey"`
	TokenHash string
	EndUserID string
	CreatedAt int64 `gorm:"autoCreateTime:false"`
	ExpiresAt int64
}

func (sessionRow) TableName() string { return "connect_sessions" }

// CreateSession implements session.Store.
func (s *Store) CreateSession(ctx context.Context, sess session.Session) error {
	ctx, cancel := s.op(ctx, "store.CreateSession")
	defer cancel()
	row := sessionRow{ID: sess.ID, TokenHash: sess.TokenHash, EndUserID: sess.EndUserID,
		CreatedAt: micros(sess.CreatedAt), ExpiresAt: micros(sess.ExpiresAt)}
	return s.wrap("create session", s.single(ctx, func(db *gorm.DB) error { return db.Create(&row).Error }))
}

// SessionByTokenHash implements session.Store.
func (s *Store) SessionByTokenHash(ctx context.Context, hash string) (session.Session, error) {
	ctx, cancel := s.op(ctx, "store.SessionByTokenHash")
	defer cancel()
	var row sessionRow
	err := s.rdb.WithContext(ctx).Where("token_hash = ?", hash).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return session.Session{}, session.ErrNotFound
	}
	if err != nil {
		return session.Session{}, s.wrap("get session", err)
	}
	return session.Session{ID: row.ID, TokenHash: row.TokenHash, EndUserID: row.EndUserID,
		CreatedAt: fromMicros(row.CreatedAt), ExpiresAt: fromMicros(row.ExpiresAt)}, nil
}

// DeleteSession implements session.Store.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	ctx, cancel := s.op(ctx, "store.DeleteSession")
	defer cancel()
	n, err := s.exec(ctx, func(db *gorm.DB) *gorm.DB { return db.Where("id = ?", id).Delete(&sessionRow{}) })
	if err != nil {
		return s.wrap("delete session", err)
	}
	if n == 0 {
		return fmt.Errorf("delete session %s: %w", id, session.ErrNotFound)
	}
	return nil
}

// pruneSessionsQuery deletes a batch of connect sessions expired before
// the cutoff, chosen through connect_sessions_expires (prune).
const pruneSessionsQuery = "DELETE FROM connect_sessions WHERE id IN (SELECT id FROM connect_sessions WHERE expires_at < ? LIMIT ?)"

// DeleteSessionsExpiredBefore implements session.Store, a batch at a time
// (prune).
func (s *Store) DeleteSessionsExpiredBefore(ctx context.Context, t time.Time) error {
	_, err := s.prune(ctx, "DeleteSessionsExpiredBefore", pruneSessionsQuery, micros(t))
	return err
}

package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// SealingKeyIDs implements connection.Store: the small table of key ids
// that sealed stored values, read without touching the connections.
func (s *Store) SealingKeyIDs(ctx context.Context) ([]string, error) {
	ctx, cancel := s.op(ctx, "store.SealingKeyIDs")
	defer cancel()
	var ids []string
	err := s.rdb.WithContext(ctx).Raw("SELECT key_id FROM sealing_keys ORDER BY key_id").Scan(&ids).Error
	return ids, s.wrap("read sealing key ids", err)
}

// HasConnections implements connection.Store.
func (s *Store) HasConnections(ctx context.Context) (bool, error) {
	ctx, cancel := s.op(ctx, "store.HasConnections")
	defer cancel()
	var n int64
	err := s.rdb.WithContext(ctx).Raw("SELECT COUNT(*) FROM (SELECT 1 FROM connections LIMIT 1) one").Scan(&n).Error
	return n > 0, s.wrap("look for connections", err)
}

// SealedAfter implements connection.Store.
func (s *Store) SealedAfter(ctx context.Context, afterID string, limit int) ([]connection.Sealed, error) {
	ctx, cancel := s.op(ctx, "store.SealedAfter")
	defer cancel()
	var rows []struct {
		ID          string
		Generation  int64
		SealedToken string
		Kind        string
	}
	err := s.db.WithContext(ctx).Raw(`SELECT id, generation, sealed_token, 'token' AS kind FROM connections
		WHERE id > ? AND sealed_token IS NOT NULL
		UNION ALL
		SELECT connection_id, 0, sealed_token, 'revocation' FROM pending_revocations WHERE connection_id > ?
		UNION ALL
		SELECT key_hash, 0, sealed_body, 'idempotency' FROM idempotency_keys WHERE key_hash > ? AND sealed_body IS NOT NULL
		ORDER BY 1 LIMIT ?`, afterID, afterID, afterID, limit).Scan(&rows).Error
	if err != nil {
		return nil, s.wrap("read sealed values", err)
	}
	out := make([]connection.Sealed, len(rows))
	for i, r := range rows {
		out[i] = connection.Sealed{ID: r.ID, Kind: connection.SealedKind(r.Kind), Generation: r.Generation, Value: []byte(r.SealedToken)}
	}
	return out, nil
}

// Reseal implements connection.Store.
func (s *Store) Reseal(ctx context.Context, old connection.Sealed, value []byte, keyID string, at time.Time) error {
	ctx, cancel := s.op(ctx, "store.Reseal")
	defer cancel()
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var res *gorm.DB
		switch old.Kind {
		case connection.SealedRevocation:
			res = tx.Model(&revocationRow{}).Where("connection_id = ? AND sealed_token = ?", old.ID, string(old.Value)).
				Update("sealed_token", string(value))
		case connection.SealedIdempotency:
			res = tx.Model(&idempotencyRow{}).Where("key_hash = ? AND sealed_body = ?", old.ID, string(old.Value)).
				Update("sealed_body", string(value))
		default:
			// A new generation: a check that read the row before cannot
			// write its outcome, and a reconnect meanwhile is never undone.
			res = tx.Model(&connectionRow{}).Where("id = ? AND generation = ? AND sealed_token = ?", old.ID, old.Generation, string(old.Value)).
				Updates(map[string]any{"sealed_token": string(value), "generation": old.Generation + 1, "updated_at": micros(at)})
		}
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("reseal %s: %w", old.ID, connection.ErrConflict)
		}
		return s.sealingKeyStmt.exec(tx, keyID)
	})
	if errors.Is(err, connection.ErrConflict) {
		return err
	}
	return s.wrap("reseal", err)
}

// SealingKeyUse implements connection.Store: how many stored values each
// key id seals; key ids that seal nothing any more leave the table.
func (s *Store) SealingKeyUse(ctx context.Context) (map[string]int64, error) {
	var rows []struct {
		KeyID string
		N     int64
	}
	err := s.db.WithContext(ctx).Raw(`SELECT key_id, COUNT(*) AS n FROM (
		SELECT substr(sealed_token, 6, 8) AS key_id FROM connections WHERE sealed_token IS NOT NULL
		UNION ALL
		SELECT substr(sealed_token, 6, 8) FROM pending_revocations
		UNION ALL
		SELECT substr(sealed_body, 6, 8) FROM idempotency_keys WHERE sealed_body IS NOT NULL) sealed GROUP BY key_id`).Scan(&rows).Error
	if err != nil {
		return nil, s.wrap("count sealed values", err)
	}
	use := map[string]int64{}
	for _, r := range rows {
		use[r.KeyID] = r.N
	}
	var known []string
	if err := s.db.WithContext(ctx).Raw("SELECT key_id FROM sealing_keys").Scan(&known).Error; err != nil {
		return nil, s.wrap("read sealing key ids", err)
	}
	for _, id := range known {
		if use[id] != 0 {
			continue
		}
		// The condition is checked again in the statement, so a value
		// sealed meanwhile keeps its id listed.
		like := "mmc1." + id + ".%"
		err := s.db.WithContext(ctx).Exec(`DELETE FROM sealing_keys WHERE key_id = ?
			AND NOT EXISTS (SELECT 1 FROM connections WHERE sealed_token LIKE ?)
			AND NOT EXISTS (SELECT 1 FROM pending_revocations WHERE sealed_token LIKE ?)
			AND NOT EXISTS (SELECT 1 FROM idempotency_keys WHERE sealed_body LIKE ?)`, id, like, like, like).Error
		if err != nil {
			return nil, s.wrap("forget a retired key id", err)
		}
	}
	return use, nil
}

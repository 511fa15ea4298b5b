package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/session"
)

// RunSessions runs the session store contract against stores made by newStore.
func RunSessions(t *testing.T, newStore func(t *testing.T) session.Store) {
	t.Run("RoundTripAndDelete", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		sess := session.Session{ID: "cs_1", TokenHash: session.HashToken("mmcs_a"), EndUserID: "u1",
			CreatedAt: base, ExpiresAt: base.Add(30 * time.Minute)}
		if err := s.CreateSession(ctx, sess); err != nil {
			t.Fatal(err)
		}
		got, err := s.SessionByTokenHash(ctx, sess.TokenHash)
		if err != nil || !reflect.DeepEqual(got, sess) {
			t.Fatalf("SessionByTokenHash = %+v, %v; want %+v", got, err, sess)
		}
		if _, err := s.SessionByTokenHash(ctx, session.HashToken("mmcs_other")); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("unknown hash: err = %v, want ErrNotFound", err)
		}
		if err := s.DeleteSession(ctx, "cs_1"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteSession(ctx, "cs_1"); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("second delete: err = %v, want ErrNotFound", err)
		}
		if _, err := s.SessionByTokenHash(ctx, sess.TokenHash); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("deleted session still found: %v", err)
		}
	})
	t.Run("DeleteExpired", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		old := session.Session{ID: "cs_old", TokenHash: "h1", EndUserID: "u", CreatedAt: base, ExpiresAt: base.Add(time.Minute)}
		fresh := session.Session{ID: "cs_new", TokenHash: "h2", EndUserID: "u", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
		for _, x := range []session.Session{old, fresh} {
			if err := s.CreateSession(ctx, x); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteSessionsExpiredBefore(ctx, base.Add(30*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SessionByTokenHash(ctx, "h1"); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("expired session kept: %v", err)
		}
		if _, err := s.SessionByTokenHash(ctx, "h2"); err != nil {
			t.Fatalf("live session removed: %v", err)
		}
	})
}

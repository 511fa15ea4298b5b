package session_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/store"
)

func TestSessionLifecycleWithClock(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	svc := session.NewService(st, 30*time.Minute, func() time.Time { return now })
	ctx := context.Background()

	sess, token, err := svc.Open(ctx, "user-7")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, session.TokenPrefix) || len(token) < len(session.TokenPrefix)+43 {
		t.Fatalf("token %q lacks the prefix or 256 bits", token[:8])
	}
	if !sess.ExpiresAt.Equal(now.Add(30 * time.Minute)) {
		t.Fatalf("ExpiresAt = %v", sess.ExpiresAt)
	}
	got, err := svc.Authenticate(ctx, token)
	if err != nil || got.ID != sess.ID || got.EndUserID != "user-7" {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	now = now.Add(30*time.Minute - time.Microsecond)
	if _, err := svc.Authenticate(ctx, token); err != nil {
		t.Fatalf("a microsecond before expiry: %v", err)
	}
	now = now.Add(time.Microsecond)
	if _, err := svc.Authenticate(ctx, token); !errors.Is(err, session.ErrExpired) {
		t.Fatalf("at expiry: err = %v, want ErrExpired", err)
	}
	for _, bad := range []string{"", "mmcs_", "mmcs_nope", strings.TrimPrefix(token, session.TokenPrefix), token + "x"} {
		if _, err := svc.Authenticate(ctx, bad); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("Authenticate(garbage) err = %v, want ErrNotFound", err)
		}
	}
	if err := svc.End(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, token); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("ended session: err = %v, want ErrNotFound", err)
	}
	var ve *connection.ValidationError
	if _, _, err := svc.Open(ctx, ""); !errors.As(err, &ve) {
		t.Fatalf("Open(\"\") err = %v, want a validation error", err)
	}

	// The token is nowhere in the database files.
	_, token2, _ := svc.Open(ctx, "user-8")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		raw, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		for _, tok := range []string{token, token2} {
			if bytes.Contains(raw, []byte(tok)) || bytes.Contains(raw, []byte(strings.TrimPrefix(tok, session.TokenPrefix))) {
				t.Fatalf("a session token is stored in %s", e.Name())
			}
		}
	}
}

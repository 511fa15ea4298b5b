package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/store/storetest"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTestSQLite(t testing.TB) *Store {
	t.Helper()
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "mmconnect.db"), discardLogger())
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLiteContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) connection.Store { return openTestSQLite(t) })
}

func TestSQLiteSessionContract(t *testing.T) {
	storetest.RunSessions(t, func(t *testing.T) session.Store { return openTestSQLite(t) })
}

func TestSQLiteReopenKeepsRowsAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mmconnect.db")
	ctx := context.Background()
	s, err := OpenSQLite(ctx, path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	c := connection.Connection{ID: "conn_x", ServerURL: "https://a.example", Status: connection.StatusActive,
		MattermostUser: connection.MattermostUser{ID: "u"}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"), Generation: 1}
	if err := s.Create(ctx, c, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenSQLite(ctx, path, discardLogger())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.Get(ctx, "conn_x"); err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mmconnect.db")
	ctx := context.Background()
	s, err := OpenSQLite(ctx, path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Exec("INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, true)").Error; err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = OpenSQLite(ctx, path, discardLogger())
	var tooNew *ErrSchemaTooNew
	if !errors.As(err, &tooNew) || tooNew.Database != 9999 {
		t.Fatalf("OpenSQLite on a newer schema: err = %v, want ErrSchemaTooNew(9999)", err)
	}
}

// A database held locked by another process past the busy timeout is
// ErrUnavailable (503 to clients), not an internal error, and nothing is
// written.
func TestSQLiteBusyIsUnavailable(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the busy timeout")
	}
	s := openTestSQLite(t)
	ctx := context.Background()
	locker, err := s.sqlDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := locker.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	c := connection.Connection{ID: "conn_busy", ServerURL: "https://a.example", Status: connection.StatusActive,
		MattermostUser: connection.MattermostUser{ID: "u"}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"), Generation: 1}
	err = s.Create(ctx, c, connection.Change{})
	if !errors.Is(err, connection.ErrUnavailable) {
		t.Fatalf("Create on a locked database: err = %v, want ErrUnavailable", err)
	}
	locker.ExecContext(ctx, "ROLLBACK")
	locker.Close()
	if _, err := s.Get(ctx, "conn_busy"); !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("the refused write was stored: %v", err)
	}
}

// GORM logs failing statements; it must show placeholders, never values.
func TestSQLLogsCarryNoValues(t *testing.T) {
	var logs bytes.Buffer
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := connection.Connection{ID: "conn_dup", ServerURL: "https://a.example", Status: connection.StatusActive,
		MattermostUser: connection.MattermostUser{ID: "u", Email: "secret-mail@example.com"}, TokenHint: "abcd",
		SealedToken: []byte("mmc1.SEALEDVALUE"), Generation: 1}
	ctx := context.Background()
	if err := s.Create(ctx, c, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, c, connection.Change{}); !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("duplicate Create: %v", err)
	}
	if !strings.Contains(logs.String(), "INSERT INTO") {
		t.Fatalf("expected the failing statement to be logged; logs: %s", logs.String())
	}
	for _, v := range []string{"SEALEDVALUE", "secret-mail", "a.example"} {
		if strings.Contains(logs.String(), v) {
			t.Fatalf("SQL log shows the value %q: %s", v, logs.String())
		}
	}
}

func TestSQLiteOutboxContract(t *testing.T) {
	storetest.RunOutbox(t, func(t *testing.T) storetest.Outbox { return openTestSQLite(t) })
}

package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/store/storetest"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTestSQLite(t *testing.T) *Store {
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

func TestSQLiteReopenKeepsRowsAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mmconnect.db")
	ctx := context.Background()
	s, err := OpenSQLite(ctx, path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	c := connection.Connection{ID: "conn_x", ServerURL: "https://a.example", Status: connection.StatusActive,
		MattermostUser: connection.MattermostUser{ID: "u"}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"), Generation: 1}
	if err := s.Create(ctx, c); err != nil {
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

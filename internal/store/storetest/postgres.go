package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// PostgresURL returns a URL of a fresh, empty schema in the PostgreSQL named
// by MMCONNECT_TEST_POSTGRES_URL, dropped when the test ends. Without that
// variable the test is skipped, except under CI=true, where it fails: CI
// must not pass by skipping the scale-out store.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("MMCONNECT_TEST_POSTGRES_URL")
	if base == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("MMCONNECT_TEST_POSTGRES_URL is not set; CI must run the PostgreSQL tests")
		}
		t.Skip("MMCONNECT_TEST_POSTGRES_URL is not set")
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := make([]byte, 6)
	rand.Read(b)
	schema := "mmc_test_" + hex.EncodeToString(b)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("PostgreSQL at MMCONNECT_TEST_POSTGRES_URL: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer db.Close()
		db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

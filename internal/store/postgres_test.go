package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/store/migrations"
	"github.com/mmconnect/mmconnect/internal/store/storetest"
)

func openTestPostgres(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := OpenPostgres(context.Background(), dsn, PostgresOptions{MaxConns: 4, StatementTimeout: 2 * time.Second}, discardLogger())
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) connection.Store { return openTestPostgres(t, storetest.PostgresURL(t)) })
}

func TestPostgresSessionContract(t *testing.T) {
	storetest.RunSessions(t, func(t *testing.T) session.Store { return openTestPostgres(t, storetest.PostgresURL(t)) })
}

// Replicas starting at the same moment apply each migration once: the
// advisory lock serialises them, and the losers find nothing left to do.
func TestPostgresConcurrentMigrations(t *testing.T) {
	dsn := storetest.PostgresURL(t)
	const replicas = 4
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	stores := make([]*Store, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = OpenPostgres(context.Background(), dsn, PostgresOptions{MaxConns: 2}, discardLogger())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	var applied []int64
	if err := stores[0].db.Raw("SELECT version_id FROM goose_db_version WHERE version_id > 0 ORDER BY id").Scan(&applied).Error; err != nil {
		t.Fatal(err)
	}
	known, _ := fs.Glob(migrations.FS, "*.sql")
	want := make([]int64, len(known))
	for i := range want {
		want[i] = int64(i + 1)
	}
	if fmt.Sprint(applied) != fmt.Sprint(want) {
		t.Fatalf("applied migrations = %v, want %v once each", applied, want)
	}
}

func TestPostgresRefusesNewerSchema(t *testing.T) {
	dsn := storetest.PostgresURL(t)
	s := openTestPostgres(t, dsn)
	if err := s.db.Exec("INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, true)").Error; err != nil {
		t.Fatal(err)
	}
	_, err := OpenPostgres(context.Background(), dsn, PostgresOptions{}, discardLogger())
	var tooNew *ErrSchemaTooNew
	if !errors.As(err, &tooNew) || tooNew.Database != 9999 {
		t.Fatalf("err = %v, want ErrSchemaTooNew(9999)", err)
	}
}

// A statement over the statement timeout is cut and reported as unavailable.
func TestPostgresStatementTimeoutIsUnavailable(t *testing.T) {
	s := openTestPostgres(t, storetest.PostgresURL(t))
	err := s.wrap("sleep", s.db.Exec("SELECT pg_sleep(5)").Error)
	if !errors.Is(err, connection.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestPostgresOutboxContract(t *testing.T) {
	storetest.RunOutbox(t, func(t *testing.T) storetest.Outbox { return openTestPostgres(t, storetest.PostgresURL(t)) })
}

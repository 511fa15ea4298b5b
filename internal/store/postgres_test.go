package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/logtest"
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
	want := make([]int64, len(known)+len(migrations.Go(true)))
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

// A pipelined create that fails (a conflict in the batch, or the cap's
// check after every insert ran) ends its transaction: on a pool of one
// connection, the creates after it work on that same connection (pgx
// would discard one left in a transaction), and the failed ones left
// nothing behind, their audit rows included. Both failures are answers to
// the client, not the database failing, so neither is logged as an error.
func TestPostgresFailedCreatesEndTheirTransaction(t *testing.T) {
	var logs logtest.Buffer
	s, err := OpenPostgres(context.Background(), storetest.PostgresURL(t), PostgresOptions{MaxConns: 1, StatementTimeout: 2 * time.Second},
		slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	endUser := "eu-1"
	conn := func(id, mmUser string) connection.Connection {
		now := time.Now().UTC().Truncate(time.Microsecond)
		return connection.Connection{ID: id, ServerURL: "https://mm.example.com", EndUserID: &endUser, Status: connection.StatusActive,
			MattermostUser: connection.MattermostUser{ID: mmUser, Username: mmUser}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"),
			Generation: 1, CreatedAt: now, UpdatedAt: now}
	}
	change := func(c connection.Connection, max int) connection.Change {
		return connection.Change{MaxLivePerEndUser: max, SealingKey: "k1", Audit: &connection.AuditEvent{ID: "aud_" + c.ID, At: c.CreatedAt,
			Actor: "test", Action: connection.AuditConnectionCreated, ConnectionID: c.ID}}
	}
	steps := []struct {
		c    connection.Connection
		max  int
		want error
	}{
		{conn("conn_a", "u1"), 2, nil},
		{conn("conn_b", "u1"), 2, connection.ErrConflict}, // the same live account of the same end user
		{conn("conn_c", "u2"), 2, nil},
		{conn("conn_d", "u3"), 2, connection.ErrTooManyConnections},
		{conn("conn_e", "u3"), 3, nil},
	}
	backend := func() (pid int64) {
		if err := s.sqlDB.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	first := backend()
	for _, st := range steps {
		err := s.Create(ctx, st.c, change(st.c, st.max))
		if (st.want == nil && err != nil) || (st.want != nil && !errors.Is(err, st.want)) {
			t.Fatalf("create %s: %v, want %v", st.c.ID, err, st.want)
		}
		_, gerr := s.Get(ctx, st.c.ID)
		var audits int64
		s.db.Raw("SELECT count(*) FROM audit_events WHERE connection_id = ?", st.c.ID).Scan(&audits)
		if stored := gerr == nil; stored != (st.want == nil) || audits != map[bool]int64{true: 1, false: 0}[stored] {
			t.Fatalf("after create %s (%v): stored %v (%v), %d audit rows", st.c.ID, err, stored, gerr, audits)
		}
		if pid := backend(); pid != first {
			t.Fatalf("after create %s (%v): the connection was replaced (backend %d, then %d)", st.c.ID, err, first, pid)
		}
	}
	for _, want := range []string{`"msg":"sql conflict"`, `"msg":"sql refused: over the cap"`} {
		if !regexp.MustCompile(want + `,"sql":"[^\n]*","took_ms":[0-9.]+`).MatchString(logs.String()) {
			t.Errorf("no %s line with its statement and took_ms at debug level:\n%s", want, logs.String())
		}
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("a refused create was logged as an error:\n%s", logs.String())
	}
}

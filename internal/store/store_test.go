package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/audit"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/idempotency"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/store/migrations"
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
	path := filepath.Join(t.TempDir(), "mmconnect.db")
	s, err := OpenSQLite(context.Background(), path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// Another process (a backup, rotate-keys) holds the database's lock.
	other, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	locker, err := other.Conn(ctx)
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

// The reads the row cache fronts take their bound only when they go to
// the database (readThrough), yet are bounded there: with every reader
// taken, each answers ErrUnavailable instead of waiting, and reads again
// once a reader is free.
func TestSQLiteReadWaitIsBounded(t *testing.T) {
	s := openTestSQLite(t)
	ctx := context.Background()
	c := benchConnection(1)
	if err := s.Create(ctx, c, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	reads := []struct {
		name string
		read func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, c.ID); return err }},
		{"List", func() error { _, err := s.List(ctx, connection.ListFilter{Limit: 10}); return err }},
		{"FindLive", func() error {
			_, err := s.FindLive(ctx, c.ServerURL, c.MattermostUser.ID, c.EndUserID)
			return err
		}},
	}
	s.opTimeout = 100 * time.Millisecond
	var held []*sql.Conn
	for range s.rsqlDB.Stats().MaxOpenConnections {
		conn, err := s.rsqlDB.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	for _, r := range reads { // nothing read yet: the row cache cannot answer
		if err := r.read(); !errors.Is(err, connection.ErrUnavailable) {
			t.Errorf("%s with every reader taken: err = %v, want ErrUnavailable", r.name, err)
		}
	}
	for _, conn := range held {
		conn.Close()
	}
	for _, r := range reads {
		if err := r.read(); err != nil {
			t.Errorf("%s with readers free: %v", r.name, err)
		}
	}
}

// GORM logs failing statements; it must show placeholders, never values.
// A duplicate key is logged at debug only: it is an answer (ErrConflict),
// which every connect that reconnects meets, not a failure.
func TestSQLLogsCarryNoValues(t *testing.T) {
	var logs bytes.Buffer
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db"),
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
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
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a duplicate key was logged as an error: %s", logs.String())
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

// Group commit: concurrent writers share transactions, each in its own
// savepoint. A failing write (a duplicate) is rolled back alone, and every
// write that was answered is on disk, as a fresh process sees it.
func TestSQLiteGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mmconnect.db")
	s, err := OpenSQLite(context.Background(), path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := connection.Connection{ID: fmt.Sprintf("conn_%026d", i), ServerURL: "https://a.example", Status: connection.StatusActive,
				MattermostUser: connection.MattermostUser{ID: fmt.Sprintf("u%d", i/2)}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"), Generation: 1}
			errs[i] = s.Create(context.Background(), c, connection.Change{}) // every second one duplicates the account before it
		}()
	}
	wg.Wait()
	var ok []string
	for i, err := range errs {
		switch {
		case err == nil:
			ok = append(ok, fmt.Sprintf("conn_%026d", i))
		case !errors.Is(err, connection.ErrConflict):
			t.Fatalf("create %d: %v", i, err)
		}
	}
	if len(ok) != n/2 {
		t.Fatalf("%d creates succeeded, want %d (one per account)", len(ok), n/2)
	}
	s.Close()
	fresh, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for _, id := range ok {
		var got string
		if err := fresh.QueryRow("SELECT id FROM connections WHERE id = ?", id).Scan(&got); err != nil {
			t.Fatalf("answered write %s is not on disk: %v", id, err)
		}
	}
	var total int
	fresh.QueryRow("SELECT COUNT(*) FROM connections").Scan(&total)
	if total != n/2 {
		t.Fatalf("%d rows on disk, want %d", total, n/2)
	}
}

// The writer keeps temporary files (the savepoints' statement journals of
// the group commit) in memory; readers keep theirs on disk (default).
func TestSQLiteTempStore(t *testing.T) {
	s := openTestSQLite(t)
	for name, want := range map[string]int{"writer": 2, "reader": 0} {
		db := s.SQLDB()
		if name == "reader" {
			db = s.ReadDB()
		}
		var mode int
		if err := db.QueryRow("PRAGMA temp_store").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != want {
			t.Errorf("%s: temp_store = %d, want %d", name, mode, want)
		}
	}
}

// The gauge's counts, on both databases: one per status, zero included;
// active ones are counted as the live less the invalid, so revoked ones
// must not be among them.
func TestCountByStatus(t *testing.T) {
	onBothDatabases(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		count := func(want map[string]int64) {
			t.Helper()
			got, err := s.CountByStatus(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("CountByStatus = %v, want %v", got, want)
			}
		}
		count(map[string]int64{"active": 0, "invalid": 0, "revoked": 0})
		statuses := []connection.Status{connection.StatusActive, connection.StatusActive, connection.StatusInvalid,
			connection.StatusRevoked, connection.StatusRevoked, connection.StatusRevoked}
		for i, st := range statuses {
			c := connection.Connection{ID: fmt.Sprintf("conn_count%d", i), ServerURL: "https://a.example", Status: st,
				MattermostUser: connection.MattermostUser{ID: fmt.Sprintf("u%d", i)}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"), Generation: 1}
			if st == connection.StatusRevoked {
				at := time.Now()
				c.SealedToken, c.RevokedAt = nil, &at
			}
			if err := s.Create(ctx, c, connection.Change{}); err != nil {
				t.Fatal(err)
			}
		}
		count(map[string]int64{"active": 2, "invalid": 1, "revoked": 3})
	})
}

// A connect's audit event is written in the connection's transaction: with
// it when the connection is stored, not at all when it is refused.
func TestAuditEventInTheChangesTransaction(t *testing.T) {
	onBothDatabases(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		c := connection.Connection{ID: "conn_audited", ServerURL: "https://a.example", Status: connection.StatusActive,
			MattermostUser: connection.MattermostUser{ID: "u"}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"), Generation: 1}
		event := func(id string) *connection.AuditEvent {
			return &connection.AuditEvent{ID: id, At: time.Now().UTC().Truncate(time.Microsecond), Actor: "app",
				Action: connection.AuditConnectionCreated, ConnectionID: c.ID, Detail: "active"}
		}
		if err := s.Create(ctx, c, connection.Change{Audit: event("aud_first")}); err != nil {
			t.Fatal(err)
		}
		dup := c
		dup.ID = "conn_duplicate" // same live key: refused
		if err := s.Create(ctx, dup, connection.Change{Audit: event("aud_refused")}); !errors.Is(err, connection.ErrConflict) {
			t.Fatalf("duplicate create: %v", err)
		}
		got, err := s.ListAuditEvents(ctx, audit.Filter{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != "aud_first" || got[0].ConnectionID != c.ID {
			t.Fatalf("audit events = %+v, want only aud_first", got)
		}
	})
}

// onBothDatabases runs test on a fresh SQLite store and a fresh PostgreSQL
// one, for what lives outside the store contract suites.
func onBothDatabases(t *testing.T, test func(t *testing.T, s *Store)) {
	t.Run("sqlite", func(t *testing.T) { test(t, openTestSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { test(t, openTestPostgres(t, storetest.PostgresURL(t))) })
}

// readRows answers an error that comes after rows have arrived (here on
// the third row: a database error, and a NULL where a value must be), not
// the rows before it as if they were all, and the connection it read on
// serves the next read.
func TestReadRowsReportsAnErrorAfterRows(t *testing.T) {
	// query's rows 1 to upTo, with generation as given (failing at 3).
	query := func(generation string, upTo int) string {
		return fmt.Sprintf(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3)
	SELECT %s FROM n WHERE i <= %d`, literalRow("'conn_' || i", generation), upTo)
	}
	failures := []struct{ name, generation string }{
		{"database error", "abs(-9223372036854775805 - i)"}, // the third is the smallest bigint, whose abs overflows
		{"NULL", "CASE WHEN i < 3 THEN i END"},
	}
	onBothDatabases(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		for _, f := range failures {
			// The rows before the failing one read as they are (on
			// SQLite, columns of no declared type: 1 = 0 is an integer).
			rows, err := s.readRows(ctx, query(f.generation, 2), nil, 3)
			if err != nil || len(rows) != 2 || rows[0].ID != "conn_1" || rows[1].ID != "conn_2" || rows[1].Generation == 0 ||
				rows[0].MattermostIsBot || rows[0].EndUserID != nil || rows[0].SealedToken == nil || *rows[0].SealedToken != "sealed" {
				t.Fatalf("%s: readRows of the first two rows = %+v, %v", f.name, rows, err)
			}
			if rows, err := s.readRows(ctx, query(f.generation, 3), nil, 3); err == nil {
				t.Fatalf("%s: readRows = %d rows and no error, want the third row's error", f.name, len(rows))
			}
		}
		readsAgain(t, s)
	})
}

// literalRow is a connection row's columns (connectionColumns) as SQL
// both databases read, with the id and generation given as expressions.
func literalRow(id, generation string) string {
	return id + `, 'https://mm.example.com', NULL, 'active', 'u', 'alice', 'a@example.com', 1 = 0, '11.4.0', 'wxyz',
		'sealed', ` + generation + `, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, 't', 0, NULL, NULL, NULL`
}

// readsAgain stores a connection and reads it back on every connection
// of the pool (more reads than either pool has), each of which must
// serve it after a read that failed on one of them.
func readsAgain(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	c := benchConnection(1)
	if err := s.Create(ctx, c, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	for range 16 {
		if got, err := s.readRow(ctx, s.getQ, c.ID); err != nil || got.ID != c.ID {
			t.Fatalf("a read after the failed one = %q, %v", got.ID, err)
		}
	}
}

// A read that runs past its operation's bound is stopped there (SQLite
// interrupted by its driver, PostgreSQL's query cancelled) and answers
// ErrUnavailable rather than running on, and the pool's connections serve
// the next reads.
func TestReadRowsStopsAtItsBound(t *testing.T) {
	row := literalRow("'conn_1'", "1")
	endless := map[string]string{
		"sqlite":   `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT ` + row + ` FROM n WHERE i < 0`,
		"postgres": `SELECT ` + row + ` FROM pg_sleep(60)`,
	}
	onBothDatabases(t, func(t *testing.T, s *Store) {
		s.opTimeout = 100 * time.Millisecond
		done := make(chan error, 1)
		go func() {
			ctx, cancel := s.bound(context.Background())
			defer cancel()
			_, err := s.readRows(ctx, endless[s.dialect], nil, 1)
			done <- s.wrap("endless read", err)
		}()
		select {
		case err := <-done:
			if !errors.Is(err, connection.ErrUnavailable) {
				t.Fatalf("a read past its bound: err = %v, want ErrUnavailable", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a read bounded to 100 ms still runs after 20 s")
		}
		readsAgain(t, s)
	})
}

// A prune deletes a backlog a batch at a time (here batches of 2), until a
// batch comes up short: every row past the cutoff goes, however many
// batches that takes, and none after it. (The contract's PruneSettled
// holds the webhook deliveries' prune on both databases.)
func TestPruneDeletesABacklogInBatches(t *testing.T) {
	onBothDatabases(t, func(t *testing.T, s *Store) {
		s.pruneBatch = 2
		ctx := context.Background()
		base := time.Now().UTC().Truncate(time.Microsecond)
		for i := range 7 { // 0-4 are past the cutoff; 5 and 6 are not
			at := base.Add(time.Duration(i) * time.Second)
			if err := s.AddAuditEvent(ctx, audit.Event{ID: fmt.Sprintf("aud_prune%d", i), At: at, Actor: "app",
				Action: audit.ConnectionCredential, ConnectionID: "conn_x"}); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateSession(ctx, session.Session{ID: fmt.Sprintf("cs_prune%d", i), TokenHash: fmt.Sprint("hash", i),
				EndUserID: "u", CreatedAt: at.Add(-time.Hour), ExpiresAt: at}); err != nil {
				t.Fatal(err)
			}
			if held, err := s.ClaimKey(ctx, idempotency.Record{Key: fmt.Sprint("key", i), RequestHash: "r",
				CreatedAt: at.Add(-time.Hour), ExpiresAt: at}, at.Add(-2*time.Hour)); err != nil || held != nil {
				t.Fatalf("ClaimKey: %+v, %v", held, err)
			}
		}
		cutoff := base.Add(5 * time.Second)
		if n, err := s.PruneAuditEvents(ctx, cutoff); err != nil || n != 5 {
			t.Fatalf("PruneAuditEvents = %d, %v; want the 5 before the cutoff", n, err)
		}
		left, err := s.ListAuditEvents(ctx, audit.Filter{Limit: 10})
		if err != nil || len(left) != 2 || left[0].ID != "aud_prune6" || left[1].ID != "aud_prune5" {
			t.Fatalf("audit rows left = %+v, %v; want aud_prune6 and aud_prune5", left, err)
		}
		if n, err := s.PruneKeys(ctx, cutoff); err != nil || n != 5 {
			t.Fatalf("PruneKeys = %d, %v; want the 5 expired before the cutoff", n, err)
		}
		var keys []string
		if err := s.rdb.Table("idempotency_keys").Order("key_hash").Pluck("key_hash", &keys).Error; err != nil ||
			strings.Join(keys, " ") != "key5 key6" {
			t.Fatalf("keys left = %v, %v; want key5 and key6", keys, err)
		}
		if err := s.DeleteSessionsExpiredBefore(ctx, cutoff); err != nil {
			t.Fatal(err)
		}
		for i := range 7 {
			_, err := s.SessionByTokenHash(ctx, fmt.Sprint("hash", i))
			if gone := errors.Is(err, session.ErrNotFound); gone != (i < 5) {
				t.Errorf("session %d: %v; want it gone only when it expired before the cutoff", i, err)
			}
		}
	})
}

// A fresh database logs each migration once, named by its file (a Go
// migration by its name) with the time it took in milliseconds; a
// database already up to date logs none.
func TestMigrationsLoggedByName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mmconnect.db")
	open := func() string {
		var logs bytes.Buffer
		s, err := OpenSQLite(context.Background(), path, slog.New(slog.NewJSONHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		return logs.String()
	}
	want := map[string]bool{}
	sqlFiles, _ := fs.Glob(migrations.FS, "*.sql")
	for _, f := range sqlFiles {
		want[f] = true
	}
	for _, m := range migrations.Go(false) {
		want[migrations.GoName(m.Version)] = true
	}
	delete(want, "")
	got := map[string]bool{}
	for line := range strings.SplitSeq(open(), "\n") {
		var m struct {
			Msg    string   `json:"msg"`
			File   string   `json:"file"`
			TookMS *float64 `json:"took_ms"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Msg != "migration applied" {
			continue
		}
		if !want[m.File] || got[m.File] || m.TookMS == nil || *m.TookMS < 0 {
			t.Errorf("migration line %s: want a known file once, with took_ms", line)
		}
		got[m.File] = true
	}
	if len(got) != len(want) || len(want) != len(sqlFiles)+len(migrations.Go(false)) {
		t.Errorf("migrations logged %v, want each of %v", got, want)
	}
	if again := open(); strings.Contains(again, "migration applied") {
		t.Errorf("an up-to-date database logged migrations:\n%s", again)
	}
}

package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// writeFromAnotherProcess is the helper process of
// TestRowCacheSeesOtherProcesses: it sets a row's username and exits.
func TestMain(m *testing.M) {
	if path := os.Getenv("MMCONNECT_TEST_WRITE_DB"); path != "" {
		db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
		if err == nil {
			_, err = db.Exec("UPDATE connections SET mattermost_username = ? WHERE id = ?",
				os.Getenv("MMCONNECT_TEST_WRITE_NAME"), os.Getenv("MMCONNECT_TEST_WRITE_ID"))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func cachedStore(t *testing.T) (*Store, string, connection.Connection) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mmconnect.db")
	s, err := OpenSQLite(context.Background(), path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.cache == nil {
		t.Fatal("no row cache on SQLite")
	}
	c := cachedConnection()
	if err := s.Create(context.Background(), c, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	return s, path, c
}

// cachedConnection is the row the cache tests read.
func cachedConnection() connection.Connection {
	return connection.Connection{ID: "conn_cached", ServerURL: "https://a.example", Status: connection.StatusActive,
		MattermostUser: connection.MattermostUser{ID: "u", Username: "v0"}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"), Generation: 1,
		NextCheckAt: time.Now().Add(24 * time.Hour)}
}

// readers are the reads the cache serves: a row by id, and a listing page
// holding it.
var readers = []struct {
	name string
	read func(s *Store, id string) (connection.Connection, error)
}{
	{"get", func(s *Store, id string) (connection.Connection, error) { return s.Get(context.Background(), id) }},
	{"list", func(s *Store, id string) (connection.Connection, error) {
		page, err := s.List(context.Background(), connection.ListFilter{Limit: 51})
		if err != nil {
			return connection.Connection{}, err
		}
		for _, c := range page {
			if c.ID == id {
				return c, nil
			}
		}
		return connection.Connection{}, connection.ErrNotFound
	}},
}

func username(t *testing.T, s *Store, read func(*Store, string) (connection.Connection, error), id string) string {
	t.Helper()
	c, err := read(s, id)
	if err != nil {
		t.Fatal(err)
	}
	return c.MattermostUser.Username
}

// cacheHit tells whether the cache would serve the read right now.
func cacheHit(s *Store, reader, id string) bool {
	st, ok := s.cache.state()
	if !ok {
		return false
	}
	if reader == "get" {
		_, got := s.cache.rows.get(id, st)
		return got == fresh
	}
	q, args := listQuery(connection.ListFilter{Limit: 51})
	_, got := s.cache.pages.get(pageKey(q, args), st)
	return got == fresh
}

// A read after a write, by this process's writer or by another connection
// to the file, returns the written row, although the row before it was
// cached; and a cached row is served while nothing is written.
func TestRowCacheNeverServesAnOldRow(t *testing.T) {
	for _, r := range readers {
		t.Run(r.name, func(t *testing.T) {
			s, path, c := cachedStore(t)
			other := otherConnection(t, path)
			for i := 1; i <= 200; i++ {
				username(t, s, r.read, c.ID) // cached now
				name := "v" + strconv.Itoa(i)
				db := other
				if i%2 == 0 {
					db = s.sqlDB // this process's writer connection
				}
				if _, err := db.Exec("UPDATE connections SET mattermost_username = ? WHERE id = ?", name, c.ID); err != nil {
					t.Fatal(err)
				}
				if got := username(t, s, r.read, c.ID); got != name {
					t.Fatalf("write %d: read %q after writing %q", i, got, name)
				}
			}
			// Nothing written: the read comes from the cache, not the database.
			if _, err := other.Exec("PRAGMA user_version"); err != nil { // reading changes nothing
				t.Fatal(err)
			}
			if !cacheHit(s, r.name, c.ID) {
				t.Fatal("the last read is not served from the cache while nothing is written")
			}
			// A deleted row is gone at once.
			if _, err := other.Exec("DELETE FROM connections WHERE id = ?", c.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := r.read(s, c.ID); !errors.Is(err, connection.ErrNotFound) {
				t.Fatalf("read after delete: %v", err)
			}
		})
	}
}

// The cache counts each read by how it went, in the map the read used: a
// first read misses, a read while nothing is written hits, and a read
// after a commit finds its entry stale (RowCacheStats, which /metrics
// serves).
func TestRowCacheCountsItsReads(t *testing.T) {
	for _, r := range readers {
		t.Run(r.name, func(t *testing.T) {
			s, path, c := cachedStore(t)
			other := otherConnection(t, path)
			stats := func() (used, unused CacheReads) {
				t.Helper()
				byID, pages, ok := s.RowCacheStats()
				if !ok {
					t.Fatal("no row cache statistics on SQLite")
				}
				if r.name == "get" {
					return byID, pages
				}
				return pages, byID
			}
			_, idle := stats()
			steps := []struct {
				name  string
				write bool
				want  CacheReads // the used map's totals after the step
			}{
				{"first read", false, CacheReads{Misses: 1}},
				{"read again", false, CacheReads{Misses: 1, Hits: 1}},
				{"read after a commit", true, CacheReads{Misses: 1, Hits: 1, Stale: 1}},
				{"read again after it", false, CacheReads{Misses: 1, Hits: 2, Stale: 1}},
			}
			for i, st := range steps {
				if st.write {
					if _, err := other.Exec("UPDATE connections SET mattermost_username = ? WHERE id = ?", "w"+strconv.Itoa(i), c.ID); err != nil {
						t.Fatal(err)
					}
				}
				username(t, s, r.read, c.ID)
				used, unused := stats()
				if used != st.want || unused != idle {
					t.Fatalf("%s: counted %+v (the other map %+v), want %+v (the other map %+v)", st.name, used, unused, st.want, idle)
				}
			}
		})
	}
}

// The same from a separate process (as `mmconnect rotate-keys` is).
func TestRowCacheSeesOtherProcesses(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range readers {
		t.Run(r.name, func(t *testing.T) {
			s, path, c := cachedStore(t)
			for i := 1; i <= 5; i++ {
				username(t, s, r.read, c.ID)
				name := "p" + strconv.Itoa(i)
				cmd := exec.Command(exe, "-test.run=^$")
				cmd.Env = append(os.Environ(), "MMCONNECT_TEST_WRITE_DB="+path, "MMCONNECT_TEST_WRITE_ID="+c.ID, "MMCONNECT_TEST_WRITE_NAME="+name)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("writer process: %v %s", err, out)
				}
				if got := username(t, s, r.read, c.ID); got != name {
					t.Fatalf("read %q after another process wrote %q", got, name)
				}
			}
		})
	}
}

// Under concurrent writes, no read that starts after a write has returned
// sees a value older than that write: writes by another connection, and
// writes in this process's group commit, which also changes other rows
// between the writes to the row read (so that its entry outlives some
// commits).
func TestRowCacheUnderConcurrentWrites(t *testing.T) {
	writers := []struct {
		name  string
		write func(s *Store, other *sql.DB, id string, i int64) error
	}{
		{"another connection", func(_ *Store, other *sql.DB, id string, i int64) error {
			_, err := other.Exec("UPDATE connections SET generation = ? WHERE id = ?", i, id)
			return err
		}},
		{"the group commit", func(s *Store, _ *sql.DB, id string, i int64) error {
			for j := range 3 { // other rows: one created, one updated
				c := cachedConnection()
				c.ID = fmt.Sprintf("conn_%d_%d", i, j)
				c.ServerURL = "https://" + c.ID + ".example"
				if err := s.Create(context.Background(), c, connection.Change{}); err != nil {
					return err
				}
				if err := s.tx(context.Background(), func(tx *gorm.DB) error {
					return tx.Exec("UPDATE connections SET generation = ? WHERE id = ?", i, c.ID).Error
				}); err != nil {
					return err
				}
			}
			return s.tx(context.Background(), func(tx *gorm.DB) error {
				return tx.Exec("UPDATE connections SET generation = ? WHERE id = ?", i, id).Error
			})
		}},
	}
	for _, w := range writers {
		for _, r := range readers {
			t.Run(w.name+"/"+r.name, func(t *testing.T) {
				s, path, c := cachedStore(t)
				other := otherConnection(t, path)
				var committed atomic.Int64
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(1)
				writerDone := make(chan struct{})
				go func() {
					defer wg.Done()
					defer close(writerDone)
					for i := int64(1); ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if err := w.write(s, other, c.ID, i); err != nil {
							t.Error(err)
							return
						}
						committed.Store(i)
					}
				}()
				var stale atomic.Int64
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							before := committed.Load()
							got, err := r.read(s, c.ID)
							if err != nil {
								t.Error(err)
								return
							}
							if got.Generation < before {
								stale.Add(1)
							}
						}
					}()
				}
			wait:
				for committed.Load() < 50 {
					select {
					case <-writerDone: // failed
						break wait
					default:
						runtimeGosched()
					}
				}
				close(stop)
				wg.Wait()
				if n := stale.Load(); n > 0 {
					t.Fatalf("%d reads returned a row older than a write that had returned before they began", n)
				}
			})
		}
	}
}

func runtimeGosched() { runtime.Gosched() }

// The cache pins a connection, so the -shm file it reads stays the one
// SQLite uses even when every other connection to the database closes
// (the last one out would delete it, and a new one would not be the file
// the cache has open).
func TestRowCacheKeepsItsWALIndex(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mmconnect.db")
	dsn := "file:" + path + "?_journal_mode=WAL&_busy_timeout=5000"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE t (x)"); err != nil {
		t.Fatal(err)
	}
	c, err := newRowCache(ctx, path, openPlain(t, dsn), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	db.Close() // every connection but the cache's own
	before, ok := c.state()
	if !ok {
		t.Fatal("no state")
	}
	other := openPlain(t, dsn)
	defer other.Close()
	if _, err := other.Exec("INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if after, ok := c.state(); !ok || after == before {
		t.Fatal("a commit after the other connections closed did not change the state the cache reads")
	}
}

// otherConnection opens the database at path beside the store, as
// another process would, for the test's life.
func otherConnection(t *testing.T, path string) *sql.DB {
	db := openPlain(t, "file:"+path+"?_busy_timeout=10000")
	t.Cleanup(func() { db.Close() })
	return db
}

func openPlain(t *testing.T, dsn string) *sql.DB {
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// A read during or after the store's Close fails as a miss would; it is
// never the cached row, and never a fault on the unmapped WAL index.
func TestRowCacheAfterClose(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "mmconnect.db"), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	c := cachedConnection()
	if err := s.Create(ctx, c, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	for _, r := range readers {
		if _, err := r.read(s, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	if !cacheHit(s, "get", c.ID) {
		t.Fatal("the row is not cached")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { // reads racing the Close
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				if _, err := s.Get(ctx, c.ID); err != nil {
					return
				}
			}
		}()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, r := range readers {
		if _, err := r.read(s, c.ID); err == nil {
			t.Errorf("%s after Close served the cached row", r.name)
		}
	}
}

// This process's own commits, in the group commit, make stale only the
// rows they changed: an update drops its row's entry and no other, a
// create drops none, and listing pages go stale at either. A commit the
// cache cannot account for row by row (a delete, a write outside the
// group commit, another process's) makes every entry stale. Every read
// still returns the row as last written.
func TestRowCacheKeepsRowsOwnCommitsLeftAlone(t *testing.T) {
	ctx := context.Background()
	s, path, a := cachedStore(t)
	b := cachedConnection()
	b.ID, b.ServerURL = "conn_other", "https://b.example"
	if err := s.Create(ctx, b, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	other := otherConnection(t, path)
	get := func(id string) connection.Connection {
		t.Helper()
		c, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rename := func(c connection.Connection, name string) connection.Connection {
		t.Helper()
		c.MattermostUser.Username = name
		if err := s.Update(ctx, c, c.Generation, connection.Change{}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	created := 0
	steps := []struct {
		name         string
		write        func()
		keptA, keptB bool // each row's entry still served
	}{
		{"an update of a", func() { a = rename(get(a.ID), "a1") }, false, true},
		{"an update of b", func() { b = rename(get(b.ID), "b1") }, true, false},
		{"a create", func() {
			created++
			c := cachedConnection()
			c.ID, c.ServerURL = "conn_new"+strconv.Itoa(created), "https://new.example"
			if err := s.Create(ctx, c, connection.Change{}); err != nil {
				t.Fatal(err)
			}
		}, true, true},
		{"a claim of a due check and a reschedule, of another row", func() {
			c := cachedConnection()
			c.ID, c.ServerURL, c.NextCheckAt = "conn_due", "https://due.example", time.Now().Add(-time.Minute)
			if err := s.Create(ctx, c, connection.Change{}); err != nil {
				t.Fatal(err)
			}
			get(a.ID)
			get(b.ID)
			claimed, err := s.ClaimDue(ctx, time.Now(), 10, func() time.Time { return time.Now().Add(time.Hour) })
			if err != nil || len(claimed) != 1 || claimed[0].ID != c.ID {
				t.Fatalf("claimed %v, %v; want %s alone", claimed, err, c.ID)
			}
			if err := s.Reschedule(ctx, c.ID, time.Now().Add(2*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, true, true},
		{"a failed update", func() {
			if err := s.Update(ctx, get(a.ID), 99, connection.Change{}); !errors.Is(err, connection.ErrConflict) {
				t.Fatalf("update of a stale generation: %v", err)
			}
		}, true, true},
		{"a write outside the group commit", func() {
			if _, err := s.sqlDB.Exec("UPDATE connections SET mattermost_username = 'a2' WHERE id = ?", a.ID); err != nil {
				t.Fatal(err)
			}
			a.MattermostUser.Username = "a2"
		}, false, false},
		{"another connection's write", func() {
			if _, err := other.Exec("UPDATE connections SET mattermost_username = 'b2' WHERE id = ?", b.ID); err != nil {
				t.Fatal(err)
			}
			b.MattermostUser.Username = "b2"
		}, false, false},
		{"a delete", func() {
			c := get("conn_new1")
			c.Status, c.SealedToken, c.Generation = connection.StatusRevoked, nil, c.Generation+1
			now := time.Now()
			c.RevokedAt = &now
			if err := s.Update(ctx, c, c.Generation-1, connection.Change{}); err != nil {
				t.Fatal(err)
			}
			get(a.ID)
			get(b.ID)
			if err := s.Delete(ctx, c, connection.Change{}); err != nil {
				t.Fatal(err)
			}
		}, false, false},
	}
	for _, st := range steps {
		get(a.ID)
		get(b.ID)
		if _, err := s.List(ctx, connection.ListFilter{Limit: 51}); err != nil {
			t.Fatal(err)
		}
		if !cacheHit(s, "get", a.ID) || !cacheHit(s, "get", b.ID) || !cacheHit(s, "list", "") {
			t.Fatalf("before %s: the rows and the page are not cached", st.name)
		}
		st.write()
		if got := cacheHit(s, "get", a.ID); got != st.keptA {
			t.Errorf("after %s: a's entry served: %v, want %v", st.name, got, st.keptA)
		}
		if got := cacheHit(s, "get", b.ID); got != st.keptB {
			t.Errorf("after %s: b's entry served: %v, want %v", st.name, got, st.keptB)
		}
		if cacheHit(s, "list", "") && st.name != "a failed update" {
			t.Errorf("after %s: the listing page is still served", st.name)
		}
		for _, want := range []connection.Connection{a, b} {
			if got := get(want.ID).MattermostUser.Username; got != want.MattermostUser.Username {
				t.Fatalf("after %s: %s read as %q, want %q", st.name, want.ID, got, want.MattermostUser.Username)
			}
		}
	}
}

// ownCommit keeps the entries a commit left alone only when the commit is
// provably the writer's own and the only one: the state after is the very
// next one from the generation's, and the changes are known.
func TestStateMapOwnCommit(t *testing.T) {
	state := func(change uint32, salt uint32) walState {
		var b [walHeaderSize]byte
		binary.NativeEndian.PutUint32(b[0:], walIndexVersion)
		binary.NativeEndian.PutUint32(b[8:], change)
		binary.NativeEndian.PutUint16(b[14:], 4096)
		binary.BigEndian.PutUint32(b[32:], salt)
		binary.BigEndian.PutUint32(b[36:], salt*7919)
		var s walState
		for i := range s {
			s[i] = binary.NativeEndian.Uint64(b[8*i:])
		}
		return s
	}
	s5 := state(5, 1)
	cases := []struct {
		name          string
		before, after walState
		ok, exact     bool
		keptA, keptB  bool
	}{
		{"the next state, a changed", s5, state(6, 1), true, true, false, true},
		{"nothing committed", s5, s5, true, false, true, true},
		{"two commits on", s5, state(7, 1), true, true, false, false},
		{"the next state in a restarted WAL", s5, state(6, 2), true, true, false, true},
		{"a restarted WAL, two commits on", s5, state(7, 2), true, true, false, false},
		{"a WAL of other salts", s5, state(6, 3), true, true, false, false},
		{"changes not known", s5, state(6, 1), true, false, false, false},
		{"a state read mid-commit", s5, state(6, 1), false, true, false, false},
		{"begun after a commit the map has not seen", state(6, 1), state(7, 1), true, true, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newStateMap[string, int](10)
			m.get("a", s5) // the generation's state is s5
			m.put("a", 1, s5)
			m.put("b", 2, s5)
			m.beginWrite()
			if _, got := m.get("b", c.after); got != stale && c.after != s5 {
				t.Fatalf("during the write, b in the state after: %v, want stale", got)
			}
			m.ownCommit(c.before, c.after, c.ok, []string{"a"}, c.exact)
			now := c.after
			if !c.ok {
				now = state(6, 1)
			}
			for _, k := range []struct {
				key  string
				want bool
			}{{"a", c.keptA}, {"b", c.keptB}} {
				if _, got := m.get(k.key, now); (got == fresh) != k.want {
					t.Errorf("%s: %v, want served %v", k.key, got, k.want)
				}
			}
		})
	}
	// A lookup in a state older than the generation's (read before a
	// commit the map has already seen) does not start a new generation.
	m := newStateMap[string, int](10)
	m.get("a", state(6, 1))
	m.put("a", 1, state(6, 1))
	if _, got := m.get("a", s5); got != stale {
		t.Fatalf("in an older state: %v, want stale", got)
	}
	if _, got := m.get("a", state(6, 1)); got != fresh {
		t.Fatalf("a lookup in an older state dropped the generation: %v", got)
	}
}

// The update hook, which tells the group commit what each batch changed,
// misses deletes of two kinds: rows removed by ON CONFLICT REPLACE, and
// DELETE without WHERE (the truncate optimisation); and it sees no
// WITHOUT ROWID table. The store writes neither kind, connections has a
// rowid, and nothing in the schema changes its rows as a side effect.
func TestWritesTheUpdateHookSees(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	migrations, err := filepath.Glob("migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	unseen := regexp.MustCompile(`(?i)\bREPLACE\s+INTO\b|\bOR\s+REPLACE\b|\bON\s+CONFLICT\s+REPLACE\b|\bclause\.OnConflict\b|DELETE\s+FROM\s+"?connections"?\s*("|` + "`" + `|$)`)
	for _, f := range append(files, migrations...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(src), "\n") {
			if l := strings.TrimSpace(line); strings.HasPrefix(l, "//") || strings.HasPrefix(l, "--") {
				continue // comments say what is not written
			}
			if m := unseen.FindString(line); m != "" {
				t.Errorf("%s:%d: %q is a write the update hook does not report", f, i+1, m)
			}
		}
	}
	s, _, _ := cachedStore(t)
	var ddl string
	if err := s.sqlDB.QueryRow("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'connections'").Scan(&ddl); err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?i)WITHOUT\s+ROWID`).MatchString(ddl) {
		t.Fatal("connections is a WITHOUT ROWID table, whose changes the update hook does not report")
	}
	// Nor does the schema change connections behind a statement's back:
	// no trigger, and no foreign key of connections whose action could
	// change its rows when another table changes.
	var triggers, actions int
	if err := s.sqlDB.QueryRow("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").Scan(&triggers); err != nil {
		t.Fatal(err)
	}
	if err := s.sqlDB.QueryRow(`SELECT count(*) FROM pragma_foreign_key_list('connections')
		WHERE on_delete <> 'NO ACTION' OR on_update <> 'NO ACTION'`).Scan(&actions); err != nil {
		t.Fatal(err)
	}
	if triggers != 0 || actions != 0 {
		t.Fatalf("%d triggers, %d foreign key actions on connections: writes the group commit does not see", triggers, actions)
	}
}

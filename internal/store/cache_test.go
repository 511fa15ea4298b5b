package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

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
		MattermostUser: connection.MattermostUser{ID: "u", Username: "v0"}, TokenHint: "abcd", SealedToken: []byte("mmc1.x.y"), Generation: 1}
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
// sees a value older than that write.
func TestRowCacheUnderConcurrentWrites(t *testing.T) {
	for _, r := range readers {
		t.Run(r.name, func(t *testing.T) {
			s, path, c := cachedStore(t)
			other := otherConnection(t, path)
			var committed atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int64(1); ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := other.Exec("UPDATE connections SET generation = ? WHERE id = ?", i, c.ID); err != nil {
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
					for range 3000 {
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
			for committed.Load() < 50 {
				runtimeGosched()
			}
			close(stop)
			wg.Wait()
			if n := stale.Load(); n > 0 {
				t.Fatalf("%d reads returned a row older than a write that had returned before they began", n)
			}
		})
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

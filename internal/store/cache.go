package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/mattn/go-sqlite3"
	"gorm.io/gorm"
)

// rowCache keeps connection rows read by id, and the rows of listing
// pages by their query, and serves one only while the SQLite database's
// state shows no commit since it was read that may have changed it: any
// commit, by this process's writer, by a replica or by `mmconnect
// rotate-keys` in another process, changes the state, and only a commit
// of this process's group commit, whose changed rows it knows, leaves the
// other entries served, so no read after a write can return an old row or
// an old page.
//
// The state is the WAL-index header in the database's -shm file
// (https://www.sqlite.org/walformat.html): every committed transaction
// rewrites it (its change counter and last frame move on; a WAL restart
// changes its salts), and it is what SQLite's own readers consult to find
// the newest commit. Writers write its second copy, then its first; a
// reader takes it only when both copies agree, as SQLite's readers do. It
// is read from a shared, read-only mapping of the file's start, as
// SQLite's own connections read it: no lock and no system call, where a
// pread cost a system call on every GET, hit or miss.
//
// A commit by another process makes every entry stale; one by this
// process's group commit only the rows it changed (stateMap). So the cache
// pays off where status is read far more often than the same rows are
// written, which is the case it is for; a stale entry is only a miss.
type rowCache struct {
	// shm is the -shm file's header, mapped shared and read-only; nil
	// once closed, so a read racing the store's Close is a miss, not a
	// fault on an unmapped page.
	shmMu sync.RWMutex
	shm   []byte
	// pin is a connection held open for the cache's life: SQLite deletes
	// the -shm file only when no connection uses the database, and a new
	// one would leave shm reading a stale file.
	pinDB *sql.DB
	pin   *sql.Conn

	rows  *stateMap[string, connectionRow]
	pages *stateMap[string, []connectionRow]
}

// walHeaderSize is one copy of the WAL-index header; the file begins with
// two.
const walHeaderSize = 48

// walState is one copy of the header, as the 8-byte words it is read in.
type walState [walHeaderSize / 8]uint64

// bytes is s as it lies in the -shm file (in the machine's byte order).
func (s walState) bytes() (b [walHeaderSize]byte) {
	for i, w := range s {
		binary.NativeEndian.PutUint64(b[8*i:], w)
	}
	return b
}

// The header's fields that order states: iChange, which every commit
// moves on by one (and nothing else moves: not a restart of the WAL, not a
// checkpoint), and the two salts, which a restart of the WAL changes,
// the first by one on (stored big-endian, as in the WAL file).
func (s walState) change() uint32 {
	b := s.bytes()
	return binary.NativeEndian.Uint32(b[8:12])
}

func (s walState) salts() uint64 { return s[4] }

func (s walState) salt1() uint32 {
	b := s.bytes()
	return binary.BigEndian.Uint32(b[32:36])
}

// next tells whether s is the state one commit after prev: iChange one
// on, in the same WAL or in the one a restart made of it (a writer
// restarts the WAL within the transaction whose commit follows), with the
// format's version and the page size unchanged.
func (s walState) next(prev walState) bool {
	sb, pb := s.bytes(), prev.bytes()
	sameWAL := s.salts() == prev.salts() || s.salt1() == prev.salt1()+1
	return sameWAL && s[0] == prev[0] && [4]byte(sb[12:16]) == [4]byte(pb[12:16]) &&
		s.change() == prev.change()+1
}

// before tells whether s is known to be an earlier state than o: the same
// WAL, and an iChange behind o's. A restart of the WAL (new salts) leaves
// the order unknown.
func (s walState) before(o walState) bool {
	return s.salts() == o.salts() && int32(s.change()-o.change()) < 0
}

// rowCacheSize bounds the rows kept by id (a row is well under 1 KiB);
// pageCacheSize the pages (of at most connection.MaxListLimit rows).
const (
	rowCacheSize  = 10_000
	pageCacheSize = 64
)

// newRowCache pins a connection of pinDB (which it owns) to the database
// at path (WAL mode) and opens its -shm file. Errors: the connection or
// the file cannot be had, or the file is not a WAL index.
func newRowCache(ctx context.Context, path string, pinDB *sql.DB, max int) (*rowCache, error) {
	fail := func(err error) (*rowCache, error) {
		pinDB.Close()
		return nil, fmt.Errorf("row cache: %w", err)
	}
	pin, err := pinDB.Conn(ctx)
	if err != nil {
		return fail(err)
	}
	var n int
	// A read transaction maps the WAL index: from now on this process
	// uses it, so SQLite keeps the file.
	if err := pin.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&n); err != nil {
		pin.Close()
		return fail(err)
	}
	shm, err := mapHeader(path + "-shm")
	if err != nil {
		pin.Close()
		return fail(err)
	}
	c := &rowCache{shm: shm, pinDB: pinDB, pin: pin, rows: newStateMap[string, connectionRow](max),
		pages: newStateMap[string, []connectionRow](pageCacheSize)}
	// The header begins with the WAL-index format's version, 3007000.
	if _, ok := c.state(); !ok || binary.NativeEndian.Uint32(c.shm[:4]) != walIndexVersion {
		c.close()
		return nil, fmt.Errorf("row cache: %s-shm is not a WAL index of the known format", path)
	}
	return c, nil
}

// walIndexVersion is the WAL-index format's version, the header's first
// field.
const walIndexVersion = 3007000

// mapHeader maps the two header copies at the start of the -shm file at
// path, shared and read-only. SQLite made the file (at least one 32 KiB
// region) when the pinned connection first read, and keeps it whole while
// that connection is open: it truncates the file only for the first
// connection of all, and the pin holds the lock that says it is not
// first. Errors: the file cannot be opened, is too short, or cannot be
// mapped.
func mapHeader(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < 2*walHeaderSize {
		return nil, fmt.Errorf("%s holds no WAL-index header", path)
	}
	return syscall.Mmap(int(f.Fd()), 0, 2*walHeaderSize, syscall.PROT_READ, syscall.MAP_SHARED)
}

// state reads the database's current state; ok is false when it cannot
// be read consistently (a commit is being published), which is a miss.
// The first copy is read before the second, word by word with atomic
// loads, which keep that order on every architecture: a writer writes the
// second copy first, so copies that agree are one whole header.
func (c *rowCache) state() (s walState, ok bool) {
	c.shmMu.RLock()
	defer c.shmMu.RUnlock()
	if c.shm == nil {
		return s, false
	}
	var second walState
	for i := range s {
		s[i] = atomic.LoadUint64((*uint64)(unsafe.Pointer(&c.shm[8*i])))
	}
	for i := range second {
		second[i] = atomic.LoadUint64((*uint64)(unsafe.Pointer(&c.shm[walHeaderSize+8*i])))
	}
	return s, s == second
}

// stateMap keeps values read from the database, up to max of them, and
// counts how its lookups went (reads, by lookup). It is safe for
// concurrent use.
//
// Its entries belong to a generation (gen), and the generation to one
// state of the database (state): an entry is served only while it is of
// the current generation and the database is still in that state. A
// lookup that finds the database in a later state starts a new generation
// there (every older entry is stale), unless this process's writer has a
// transaction open (writing): its end (ownCommit) moves the generation on
// to the state after the commit, dropping only the entries of the rows the
// commit changed when it can prove no other commit came in between, and
// every entry otherwise. So a commit by another process, or any commit
// whose changes are not known row by row, makes every entry stale, and
// this process's creates and updates leave the rows they did not touch
// cached.
type stateMap[K comparable, V any] struct {
	mu      sync.Mutex // guards the fields below
	m       map[K]stateEntry[V]
	max     int
	state   walState
	gen     uint64
	writing bool
	reads   [lookups]atomic.Uint64
}

type stateEntry[V any] struct {
	v   V
	gen uint64
}

// lookup is what a stateMap held for a key: nothing (absent), a value read
// under an earlier state of the database (stale), or a value read under
// the state asked for (fresh).
type lookup int

const (
	absent lookup = iota
	stale
	fresh
	lookups // how many there are
)

func newStateMap[K comparable, V any](max int) *stateMap[K, V] {
	return &stateMap[K, V]{m: make(map[K]stateEntry[V]), max: max}
}

// get returns k's value and whether it holds in state s, the database's
// state just read (fresh). A state later than the generation's starts a
// new generation there, unless this process's writer is writing.
func (m *stateMap[K, V]) get(k K, s walState) (V, lookup) {
	m.mu.Lock()
	if s != m.state && !m.writing && !s.before(m.state) {
		m.gen++
		m.state = s
	}
	e, ok := m.m[k]
	current := e.gen == m.gen && s == m.state
	m.mu.Unlock()
	switch {
	case !ok:
		return e.v, absent
	case !current:
		return e.v, stale
	}
	return e.v, fresh
}

// put keeps v, read under state s (read before v was): only if s is still
// the generation's state. A commit between s and the read either moved
// the generation on (v is not kept), or is this process's own, whose end
// drops v if the commit changed its row, or is another's, which makes
// every entry of the generation stale.
func (m *stateMap[K, V]) put(k K, v V, s walState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s != m.state {
		return
	}
	if _, ok := m.m[k]; !ok && len(m.m) >= m.max {
		for old := range m.m { // evict one entry; Go's map order picks it
			delete(m.m, old)
			break
		}
	}
	m.m[k] = stateEntry[V]{v: v, gen: m.gen}
}

// beginWrite marks this process's writer as writing, until ownCommit.
func (m *stateMap[K, V]) beginWrite() {
	m.mu.Lock()
	m.writing = true
	m.mu.Unlock()
}

// ownCommit ends what beginWrite began: the writer's transaction, begun
// in state before (read while it held SQLite's write lock) and ended in
// state after (read after its COMMIT, or its failure), both read whole
// when ok. When exact, the commit succeeded and changed no row but those
// whose keys are in changed. If nothing was committed, the entries stand;
// if after is the very next state from before, which is the generation's,
// the commit was this one (no other writer could commit while the lock
// was held, and any commit after it would make the state later still):
// only changed's entries are dropped, and the generation moves on to
// after. Otherwise every entry is stale.
func (m *stateMap[K, V]) ownCommit(before, after walState, ok bool, changed []K, exact bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writing = false
	switch {
	case ok && after == before:
	case ok && exact && before == m.state && after.next(before):
		for _, k := range changed {
			delete(m.m, k)
		}
		m.state = after
	default:
		m.gen++
		if ok {
			m.state = after
		}
	}
}

// CacheReads count the reads through one of the row cache's maps since
// the store opened: served from the cache (Hits); not held (Misses); held,
// but read before a later commit that may have changed it, or asked for
// while a commit was being published (Stale). Misses and stale reads went
// to the database. Stale reads that outnumber hits mean commits come
// faster than the same rows are read again: this process's group commit
// makes stale only the rows it changed, any other commit every entry.
type CacheReads struct {
	Hits, Misses, Stale uint64
}

// stats is m's lookups so far.
func (m *stateMap[K, V]) stats() CacheReads {
	return CacheReads{Hits: m.reads[fresh].Load(), Misses: m.reads[absent].Load(), Stale: m.reads[stale].Load()}
}

// RowCacheStats returns the reads through the row cache, of connections
// by id and of listing pages, and false where there is none: on
// PostgreSQL, or on a SQLite database whose WAL index could not be mapped.
func (s *Store) RowCacheStats() (byID, pages CacheReads, ok bool) {
	if s.cache == nil {
		return CacheReads{}, CacheReads{}, false
	}
	return s.cache.rows.stats(), s.cache.pages.stats(), true
}

// byID and byQuery are the cache's maps, for readThrough: rows by id, and
// listing pages by their query (pageKey).
func (c *rowCache) byID() *stateMap[string, connectionRow]      { return c.rows }
func (c *rowCache) byQuery() *stateMap[string, []connectionRow] { return c.pages }

// pageKey names a listing page in the cache: its query and arguments.
func pageKey(q string, args []any) string { return fmt.Sprintf("%s%q", q, args) }

// readThrough is the one way the store reads through the cache. It serves
// key's value from the map that m picks while the database is still in
// the state the value was read under, and otherwise reads it with read and
// keeps a good read, tagged with the state taken before it: a commit in
// between leaves the entry stale, never wrong. Without a cache (as on
// PostgreSQL), or while a commit is being published, it only reads, and
// key is not computed. It counts each lookup in the map (stale while a
// commit is being published). Only a read takes the store's bound
// (Store.bound), so a hit costs no timer. Errors: read's.
func readThrough[K comparable, V any](s *Store, ctx context.Context, m func(*rowCache) *stateMap[K, V], key func() K,
	read func(context.Context) (V, error)) (V, error) {
	bounded := func() (V, error) {
		ctx, cancel := s.bound(ctx)
		defer cancel()
		return read(ctx)
	}
	c := s.cache
	if c == nil {
		return bounded()
	}
	sm := m(c)
	st, ok := c.state()
	if !ok {
		sm.reads[stale].Add(1) // a commit is being published
		return bounded()
	}
	k := key()
	v, got := sm.get(k, st)
	sm.reads[got].Add(1)
	if got == fresh {
		return v, nil
	}
	v, err := bounded()
	if err == nil {
		sm.put(k, v, st)
	}
	return v, err
}

// changeLog notes the rows of connections that the writer connection
// updates or deletes, from SQLite's update hook, so that a batch of the
// group commit can tell the row cache which rows it changed: only those
// rows' entries are dropped at its commit. An insert needs no note: the
// cache holds only rows that existed when read, and an insert of one of
// their ids fails. A delete, or more updates than maxNoted, makes the
// batch's changes unknown row by row (whole), which drops every entry.
//
// The hook reports every change to a rowid table but two kinds of delete
// (rows that ON CONFLICT REPLACE removes, and DELETE without WHERE, the
// truncate optimisation); the store writes neither to connections
// (TestWritesTheUpdateHookSees), and connections is a rowid table.
type changeLog struct {
	mu      sync.Mutex // guards the fields below
	updated []int64    // rowids
	whole   bool
}

// maxNoted bounds the updates a batch notes one by one.
const maxNoted = 1024

// note is the writer connection's update hook.
func (l *changeLog) note(op int, _, table string, rowid int64) {
	if table != "connections" || op == sqlite3.SQLITE_INSERT {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if op != sqlite3.SQLITE_UPDATE || len(l.updated) >= maxNoted {
		l.whole = true
		return
	}
	l.updated = append(l.updated, rowid)
}

// take returns what was noted since the last take, and forgets it.
func (l *changeLog) take() (updated []int64, whole bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	updated, whole = l.updated, l.whole
	l.updated, l.whole = nil, false
	return updated, whole
}

// ownWrite is a batch of the group commit as the row cache sees it: begun
// with the writer holding SQLite's write lock, in state before.
type ownWrite struct {
	c      *rowCache
	log    *changeLog
	before walState
	ok     bool
}

// beginWrite starts an ownWrite; the caller holds SQLite's write lock (its
// transaction began with BEGIN IMMEDIATE), so no other commit can come
// until its own. What log noted before is dropped: those were statements
// outside any batch, whose commits the cache met as another process's.
// Without a cache it does nothing.
func (c *rowCache) beginWrite(log *changeLog) ownWrite {
	if c == nil {
		return ownWrite{}
	}
	log.take()
	c.rows.beginWrite()
	c.pages.beginWrite()
	before, ok := c.state()
	return ownWrite{c: c, log: log, before: before, ok: ok}
}

// changed returns the ids of the connections the batch updated, read in
// its transaction tx before it commits (the hook knows rowids only), and
// whether that is all it changed (exact).
func (w ownWrite) changed(tx *gorm.DB) (ids []string, exact bool) {
	if w.c == nil {
		return nil, false
	}
	rowids, whole := w.log.take()
	if whole {
		return nil, false
	}
	if len(rowids) == 0 {
		return nil, true
	}
	if err := tx.Raw("SELECT id FROM connections WHERE rowid IN ?", rowids).Scan(&ids).Error; err != nil {
		return nil, false
	}
	return ids, true
}

// end tells the cache the batch's COMMIT is over: exact when it succeeded
// and changed no connection but ids (rows by id keep their other entries;
// listing pages keep none, since a create or a change moves rows in and
// out of them).
func (w ownWrite) end(ids []string, exact bool) {
	if w.c == nil {
		return
	}
	after, ok := w.c.state()
	ok = ok && w.ok
	w.c.rows.ownCommit(w.before, after, ok, ids, exact)
	w.c.pages.ownCommit(w.before, after, ok, nil, false)
}

func (c *rowCache) close() {
	c.shmMu.Lock()
	syscall.Munmap(c.shm)
	c.shm = nil
	c.shmMu.Unlock()
	c.pin.Close()
	c.pinDB.Close()
}

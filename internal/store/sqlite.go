package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mattn/go-sqlite3"
	"github.com/pressly/goose/v3"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// sqliteParams apply to every pooled connection (mattn/go-sqlite3 runs them
// on each open): WAL so readers never wait for the writer, a busy timeout so
// writers queue instead of failing, foreign keys on, write transactions that
// take the lock when they begin (no deadlocking upgrade from a read lock),
// and full fsync so an acknowledged write survives a power cut.
const sqliteParams = "_journal_mode=WAL&_busy_timeout=5000&_foreign_keys=on&_txlock=immediate&_synchronous=FULL"

// readerParams apply to the readers beside: each keeps up to 32 prepared
// statements, so the hand-written reads, which pass their query's
// text, prepare it once per connection rather than on every call (that
// cost about a tenth of a listing page).
const readerParams = "&_stmt_cache_size=32"

// onWriterConnect sets what the DSN cannot, on the writer: temporary files
// in memory. The group commit runs each caller's writes in a savepoint,
// and SQLite keeps a savepoint's undo pages in a statement journal, a
// temporary file by default: in memory, a batch of creates cost the
// writer about 40% less. Readers keep temporary files on disk, so a query
// that sorts many rows cannot grow the process by its size.
func onWriterConnect(c *sqlite3.SQLiteConn) error {
	_, err := c.Exec("PRAGMA temp_store = MEMORY", nil)
	return err
}

// sqliteConnector opens connections with a driver of this store's own (for
// its ConnectHook), rather than one registered globally by name.
type sqliteConnector struct {
	dsn    string
	driver *sqlite3.SQLiteDriver
}

func (c sqliteConnector) Connect(context.Context) (driver.Conn, error) { return c.driver.Open(c.dsn) }
func (c sqliteConnector) Driver() driver.Driver                        { return c.driver }

// OpenSQLite opens (creating if needed) the SQLite database at path and
// brings its schema up to date.
func OpenSQLite(ctx context.Context, path string, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	// SQLite gives its -wal and -shm files the database file's mode, so the
	// file is made private before SQLite first opens it; files an older
	// version left readable are made private too.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open database file: %w", err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("make %s private: %w", p, err)
		}
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + sqliteParams
	pool := func(dsn string, hook func(*sqlite3.SQLiteConn) error) *sql.DB {
		return sql.OpenDB(sqliteConnector{dsn: dsn, driver: &sqlite3.SQLiteDriver{ConnectHook: hook}})
	}
	open := func(dsn string, conns int, hook func(*sqlite3.SQLiteConn) error) (*gorm.DB, *sql.DB, error) {
		db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool(dsn, hook)}), gormConfig(log))
		if err != nil {
			return nil, nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
		sqlDB, err := db.DB()
		if err != nil {
			return nil, nil, err
		}
		sqlDB.SetMaxOpenConns(conns)
		sqlDB.SetMaxIdleConns(conns)
		return db, sqlDB, nil
	}
	// SQLite runs one write at a time: one writer connection, so writers
	// wait their turn in Go rather than in the busy handler's sleeps, and
	// a pool of readers beside it.
	changes := &changeLog{}
	writerConnect := func(c *sqlite3.SQLiteConn) error {
		c.RegisterUpdateHook(changes.note)
		return onWriterConnect(c)
	}
	db, sqlDB, err := open(dsn, 1, writerConnect)
	if err != nil {
		return nil, err
	}
	rdb, rsqlDB, err := open(dsn+readerParams, 8, nil)
	if err != nil {
		sqlDB.Close()
		return nil, err
	}
	s := &Store{db: db, rdb: rdb, sqlDB: sqlDB, rsqlDB: rsqlDB, dialect: "sqlite", classify: classifySQLite, opTimeout: 15 * time.Second, pruneBatch: defaultPruneBatch}
	if err := migrate(ctx, goose.DialectSQLite3, sqlDB, nil, log); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if s.cache, err = newRowCache(ctx, path, pool(dsn, nil), rowCacheSize); err != nil {
		log.Warn("reads by id go to the database every time", "err", err)
	}
	s.batch = newBatcher(db, s.savepointStmt, s.rollbackToStmt, s.cache, changes)
	return s, nil
}

// classifySQLite recognises the errors that mean "try again later": a
// database locked past the busy timeout, a full disk, an I/O failure.
func classifySQLite(err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrFull, sqlite3.ErrIoErr,
			sqlite3.ErrCantOpen, sqlite3.ErrReadonly, sqlite3.ErrNomem:
			return connection.ErrUnavailable
		}
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, context.DeadlineExceeded) {
		return connection.ErrUnavailable
	}
	return nil
}

// BackupSQLite writes a consistent copy of the SQLite database at path to
// dest (VACUUM INTO: one read transaction, so writers carry on meanwhile),
// then checks the copy's integrity. dest must not exist.
func BackupSQLite(ctx context.Context, path, dest string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	if _, err := os.Stat(dest); err == nil {
		return fmt.Errorf("%s already exists; choose a new file", dest)
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_busy_timeout=10000")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", dest); err != nil {
		return fmt.Errorf("back up %s: %w", path, err)
	}
	if err := os.Chmod(dest, 0o600); err != nil {
		return err
	}
	copyDB, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: dest}).EscapedPath()+"?mode=ro")
	if err != nil {
		return err
	}
	defer copyDB.Close()
	var result string
	if err := copyDB.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&result); err != nil || result != "ok" {
		return fmt.Errorf("backup %s failed its integrity check: %s %v", dest, result, err)
	}
	return nil
}

// readRowsSQLite is readRows on SQLite: the query on one of the readers,
// through the driver itself. database/sql's Rows watch a cancellable
// context from a goroutine of their own, started for every query, and
// convert each column by reflection; the driver honours the context
// itself (it interrupts SQLite when the context ends, with no goroutine),
// and driverRows converts the few types a connection row has. The
// goroutine cost most where the process is otherwise idle, since starting
// it wakes a thread: a read by id among a million rows, one at a time,
// took 25-27 µs where it took 36-44 µs; a read SQLite's cache holds 16-17
// µs where 21-24 (BenchmarkSQLite/GetUncached); over HTTP, one client's
// random ids among a million rows had a p50 of 96-105 µs where 113-129 µs
// (BENCHMARKS.md). With both cores busy the two cost the same. Errors:
// an argument the driver cannot take; the query's; the pool's.
func (s *Store) readRowsSQLite(ctx context.Context, q string, args []any, limit int) ([]connectionRow, error) {
	named := make([]driver.NamedValue, len(args))
	for i, a := range args {
		v, err := driver.DefaultParameterConverter.ConvertValue(a)
		if err != nil {
			return nil, fmt.Errorf("argument %d: %w", i+1, err)
		}
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	var out []connectionRow
	err := raw(ctx, s.rsqlDB, func(dc any) error {
		rows, err := dc.(driver.QueryerContext).QueryContext(ctx, q, named)
		if err != nil {
			return err
		}
		defer rows.Close()
		out, err = scanRows(&driverRows{rows: rows, vals: make([]driver.Value, len(rows.Columns()))}, limit)
		return err
	})
	return out, err
}

// driverRows reads a driver's rows for scanRows.
type driverRows struct {
	rows driver.Rows
	vals []driver.Value // one per column of rows
	err  error
}

// Next reads the next row; false at the end or on an error (Err).
func (r *driverRows) Next() bool {
	if r.err != nil {
		return false
	}
	err := r.rows.Next(r.vals)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return err == nil
}

// Err is the error that ended Next, if any.
func (r *driverRows) Err() error { return r.err }

// Scan stores the row's columns in dest, in order. Errors: dest is not
// one per column; a column that does not fit its destination (a NULL
// where a value must be, or a value of another type).
func (r *driverRows) Scan(dest ...any) error {
	if len(dest) != len(r.vals) {
		return fmt.Errorf("scan: %d destinations for %d columns", len(dest), len(r.vals))
	}
	for i, d := range dest {
		if err := assignValue(d, r.vals[i]); err != nil {
			return fmt.Errorf("scan column %d: %w", i, err)
		}
	}
	return nil
}

// assignValue stores v, as the SQLite driver reads a column (string,
// []byte, int64, bool or nil), in dest, one of a connection row's field
// types. Errors: v does not fit dest.
func assignValue(dest any, v driver.Value) error {
	switch d := dest.(type) {
	case *string:
		if s, ok := text(v); ok {
			*d = s
			return nil
		}
	case **string:
		if v == nil {
			*d = nil
			return nil
		}
		if s, ok := text(v); ok {
			*d = &s
			return nil
		}
	case *int64:
		if n, ok := v.(int64); ok {
			*d = n
			return nil
		}
	case **int64:
		if v == nil {
			*d = nil
			return nil
		}
		if n, ok := v.(int64); ok {
			*d = &n
			return nil
		}
	case *bool:
		switch b := v.(type) {
		case bool:
			*d = b
			return nil
		case int64: // a column without a declared type, such as an expression's
			*d = b != 0
			return nil
		}
	}
	return fmt.Errorf("cannot store %T in %T", v, dest)
}

// text is v as a string, when it is text.
func text(v driver.Value) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case []byte:
		return string(t), true
	}
	return "", false
}

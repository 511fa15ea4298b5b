package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/store/migrations"
)

// PostgresOptions bound what one replica asks of a shared PostgreSQL.
type PostgresOptions struct {
	// MaxConns is the most connections this replica opens.
	MaxConns int
	// StatementTimeout is the longest one statement may run on the server;
	// the client also gives up a little after it, so an unreachable
	// database answers 503 instead of hanging.
	StatementTimeout time.Duration
}

// OpenPostgres connects to PostgreSQL (through pgx) and brings the schema up
// to date. Migrations hold a PostgreSQL advisory lock on one dedicated
// connection, so replicas starting together apply each migration once.
func OpenPostgres(ctx context.Context, dsn string, opts PostgresOptions, log *slog.Logger) (*Store, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 10
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 5 * time.Second
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres URL: %w", err)
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > 5*time.Second {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(opts.StatementTimeout.Milliseconds(), 10)
	cfg.RuntimeParams["idle_in_transaction_session_timeout"] = "30000"
	cfg.RuntimeParams["application_name"] = "mmconnect"
	sqlDB := stdlib.OpenDB(*cfg)
	sqlDB.SetMaxOpenConns(opts.MaxConns)
	sqlDB.SetMaxIdleConns(opts.MaxConns)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	sqlDB.SetConnMaxLifetime(30 * time.Minute)

	db, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), gormConfig(log))
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	s := &Store{db: db, rdb: db, sqlDB: sqlDB, rsqlDB: sqlDB, dialect: "postgres", classify: classifyPostgres,
		opTimeout: opts.StatementTimeout + 2*time.Second}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 120))
	if err != nil {
		sqlDB.Close()
		return nil, err
	}
	if err := migrate(ctx, goose.DialectPostgres, sqlDB, locker, log); err != nil {
		sqlDB.Close()
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	return s, nil
}

// classifyPostgres recognises the errors that mean "the database cannot
// answer now": no connection, a connection lost, the server shutting down
// or out of resources, a statement cut by statement_timeout.
func classifyPostgres(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && (pgErr.Code[:2] == "08" || pgErr.Code[:2] == "53" || pgErr.Code[:2] == "57"):
			// connection exception, insufficient resources, operator intervention
			// (admin shutdown, cannot connect now, query canceled)
			return connection.ErrUnavailable
		case pgErr.Code == "40001" || pgErr.Code == "40P01":
			return connection.ErrUnavailable // serialization failure, deadlock: retry
		}
		return nil
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return connection.ErrUnavailable
	}
	return nil
}

// endUserLockQuery serialises one end user's creates in the pipelined
// create: a transaction-scoped advisory lock on the end user.
const endUserLockQuery = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))"

// liveCap is the per-end-user limit a create must respect.
type liveCap struct {
	endUserID string
	max       int
}

// createPipelined runs a create's transaction on PostgreSQL as one
// pipelined batch, one round trip: BEGIN; with lc, the end user's
// advisory lock; stmts; with lc, the cap's check (liveCapQuery); COMMIT.
// A statement that fails aborts the transaction, so the COMMIT after it
// commits nothing, and a ROLLBACK ends it. Run one by one, the statements
// took a round trip each (about eight for a create with its audit row);
// sent as a batch, then COMMIT once the live count had been read, two.
// Round trips are what a database across a network charges for: behind
// the bench's delaying proxy (-postgres-delay 500us, a SELECT 1 of 2.3
// ms), creates over HTTP went from 1,523-1,594/s with two to
// 1,947-2,031/s with one (BENCHMARKS.md). The lock is taken before the
// inserts and held to the end, so two creates of one end user cannot
// both pass the check; the check comes after the inserts, so a create of
// a connection that is already live is a conflict, as on SQLite. Errors:
// ErrTooManyConnections (wrapped, with the count); the first statement's
// error, translated as GORM translates them (a unique violation is
// gorm.ErrDuplicatedKey); the connection's.
func (s *Store) createPipelined(ctx context.Context, lc *liveCap, stmts []stmt) error {
	conn, err := s.sqlDB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		pc := dc.(*stdlib.Conn).Conn()
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		if lc != nil {
			b.Queue(endUserLockQuery, lc.endUserID)
		}
		for _, st := range stmts {
			b.Queue(st.w.query, st.args...)
		}
		if lc != nil {
			b.Queue(s.liveCapQ, lc.endUserID, lc.max)
		}
		b.Queue("COMMIT")
		begin := time.Now()
		err := pc.SendBatch(ctx, b).Close() // runs every queued statement; the first error
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == migrations.LiveCapSQLState {
			err = fmt.Errorf("%s: %w", pgErr.Message, connection.ErrTooManyConnections)
		}
		err = traced(ctx, s.db, begin, func() string { return batchText(b) }, -1, err)
		if err == nil {
			return nil
		}
		if _, rerr := pc.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			// The transaction may still be open: the connection must not
			// go back to the pool.
			return errors.Join(err, driver.ErrBadConn)
		}
		return err
	})
}

// liveCapQuery checks, after a create's inserts, that its end user is not
// over the cap: SQLite's overCap, counted with the new connection.
const liveCapQuery = "SELECT mmconnect_check_live_cap((" + liveCountQuery + "), ?)"

// batchText is b's statements, for the SQL log.
func batchText(b *pgx.Batch) string {
	qs := make([]string, len(b.QueuedQueries))
	for i, q := range b.QueuedQueries {
		qs[i] = q.SQL
	}
	return strings.Join(qs, "; ")
}

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
		opTimeout: opts.StatementTimeout + 2*time.Second, pruneBatch: defaultPruneBatch}
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
	return s.batchTx(ctx, func(b *pgx.Batch) {
		if lc != nil {
			b.Queue(endUserLockQuery, lc.endUserID)
		}
		queueAll(b, stmts)
		if lc != nil {
			b.Queue(s.liveCapQ, lc.endUserID, lc.max)
		}
	})
}

// batchTx runs the statements fill queues as one transaction in one
// round trip on PostgreSQL: BEGIN, them, COMMIT, in a pipelined batch.
// Errors: as sendBatch's; the pool's.
func (s *Store) batchTx(ctx context.Context, fill func(b *pgx.Batch)) error {
	return s.pipelined(ctx, func(pc *pgx.Conn) error {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		fill(b)
		b.Queue("COMMIT")
		return s.sendBatch(ctx, pc, b)
	})
}

// dryRun is the statement build makes, as GORM would run it, without
// running it: the text and arguments a pipelined batch sends, from the
// same query the SQLite path runs.
func (s *Store) dryRun(ctx context.Context, build func(db *gorm.DB) *gorm.DB) *gorm.Statement {
	return build(s.db.Session(&gorm.Session{DryRun: true, Context: ctx})).Statement
}

// updatePipelined runs Update's transaction on PostgreSQL in two round
// trips: BEGIN and the conditional update, which returns the connection's
// event count; then what the change records beside the row (changeStmts,
// its events numbered up to that count) and COMMIT. Run by GORM, one
// statement at a time, an update with an event and its audit row took
// about ten. update is the UPDATE as GORM builds it (a dry run of the same
// query SQLite runs, its RETURNING included). When it matches no row (a
// race lost, which is rare), one more round trip tells ErrNotFound from
// ErrConflict and another ends the transaction. Errors: ErrNotFound;
// ErrConflict (wrapped); the statements', as createPipelined's.
func (s *Store) updatePipelined(ctx context.Context, id string, update *gorm.Statement, ch connection.Change) error {
	return s.pipelined(ctx, func(pc *pgx.Conn) error {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		var seq int64
		matched := false
		b.Queue(update.SQL.String(), update.Vars...).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&seq)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			matched = err == nil
			return err
		})
		if err := s.sendBatch(ctx, pc, b); err != nil {
			return err
		}
		if !matched {
			var exists bool
			if err := pc.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM connections WHERE id = $1)", id).Scan(&exists); err != nil {
				return err
			}
			return missed(id, exists)
		}
		rest, err := s.changeStmts(id, seq-int64(len(ch.Events))+1, ch)
		if err != nil {
			return err
		}
		b = &pgx.Batch{}
		queueAll(b, rest)
		b.Queue("COMMIT")
		return s.sendBatch(ctx, pc, b)
	})
}

// queueAll queues stmts on b in order: execAll's twin, for a pipelined
// batch.
func queueAll(b *pgx.Batch, stmts []stmt) {
	for _, st := range stmts {
		b.Queue(st.w.query, st.args...)
	}
}

// pipelined runs fn on one of the pool's connections as pgx's own, to
// send batches, which database/sql cannot. When fn fails, the
// transaction it may have left open is rolled back; when that fails too,
// the connection is dropped rather than returned to the pool inside a
// transaction. Errors: fn's; the pool's.
func (s *Store) pipelined(ctx context.Context, fn func(pc *pgx.Conn) error) error {
	return s.rawConn(ctx, func(pc *pgx.Conn) error {
		err := fn(pc)
		if err == nil {
			return nil
		}
		if _, rerr := pc.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			return errors.Join(err, driver.ErrBadConn)
		}
		return err
	})
}

// readRowsPgx is readRows on PostgreSQL: the query on pgx's own
// connection. Errors: the query's; the pool's.
func (s *Store) readRowsPgx(ctx context.Context, q string, args []any, limit int) ([]connectionRow, error) {
	var out []connectionRow
	err := s.rawConn(ctx, func(pc *pgx.Conn) error {
		rows, err := pc.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		out, err = scanRows(rows, limit)
		return err
	})
	return out, err
}

// rawConn runs fn on one of the pool's connections as pgx's own. The
// pool checks a connection before handing it out again (pgx's
// ResetSession: closed, left in a transaction, or idle over a second and
// not answering a ping), as it does for its own queries. Errors: fn's;
// the pool's.
func (s *Store) rawConn(ctx context.Context, fn func(pc *pgx.Conn) error) error {
	return raw(ctx, s.sqlDB, func(dc any) error { return fn(dc.(*stdlib.Conn).Conn()) })
}

// sendBatch sends b in one round trip and reads every result. Its error
// is the first statement's, logged and translated as GORM does its own
// (a unique violation is gorm.ErrDuplicatedKey); the cap's check
// refusing a create is ErrTooManyConnections, wrapped with the count.
func (s *Store) sendBatch(ctx context.Context, pc *pgx.Conn, b *pgx.Batch) error {
	begin := time.Now()
	err := pc.SendBatch(ctx, b).Close()
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == migrations.LiveCapSQLState {
		err = fmt.Errorf("%s: %w", pgErr.Message, connection.ErrTooManyConnections)
	}
	return traced(ctx, s.db, begin, func() string { return batchText(b) }, -1, err)
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

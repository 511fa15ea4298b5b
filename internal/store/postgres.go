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
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/connection"
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

// Package store keeps connections in a SQL database through GORM: SQLite
// embedded for one node, PostgreSQL for several. It implements
// connection.Store; the contract every implementation must meet is the
// suite in storetest.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/logging"
)

// Store implements connection.Store on a GORM database.
type Store struct {
	// db writes (and reads what a write depends on); rdb serves reads. On
	// SQLite db is one connection, so writers queue in Go instead of
	// sleeping in SQLite's busy handler, beside a pool of readers (WAL
	// lets them read while a write goes on). On PostgreSQL both are the
	// one pool.
	db  *gorm.DB
	rdb *gorm.DB
	// batch, on SQLite, commits concurrent write transactions together.
	batch *batcher
	// cache, on SQLite, serves rows read by id while the database is
	// unchanged (see rowCache).
	cache *rowCache
	// getQ and findLiveQ are getQuery and findLiveQuery in the dialect's
	// placeholders, written once. The hand-written reads pass their text:
	// the drivers keep each connection's statements prepared (mattn's
	// cache on SQLite's readers, readerParams; pgx's statement cache).
	// liveCapQ is liveCapQuery's, which only PostgreSQL's creates run.
	getQ, findLiveQ, liveCapQ string
	// The hottest writes, prepared once on the writer pool and run in a
	// transaction with exec; a create on PostgreSQL sends their text in
	// one pipelined batch instead (createPipelined). liveCountStmt is
	// SQLite's (PostgreSQL counts in liveCapQ).
	insertStmt, liveCountStmt, auditStmt, sealingKeyStmt, eventStmt, revocationStmt *writeStmt
	// savepointStmt and rollbackToStmt (SQLite) frame each caller's
	// writes in the group commit.
	savepointStmt, rollbackToStmt *writeStmt
	sqlDB                         *sql.DB
	rsqlDB                        *sql.DB
	dialect                       string
	classify                      func(error) error
	// opTimeout bounds one operation from the client side, so a database
	// that stops answering yields ErrUnavailable rather than a hang.
	opTimeout time.Duration
	// tracer, when set, makes each operation a span.
	tracer trace.Tracer
	// pruneBatch is how many rows a prune deletes per statement (prune).
	pruneBatch int
}

// op begins one store operation: bounded by opTimeout and, with tracing
// on, a span called name. Call the returned function when it ends.
func (s *Store) op(ctx context.Context, name string) (context.Context, func()) {
	ctx, end := s.span(ctx, name)
	ctx, cancel := s.bound(ctx)
	return ctx, func() { cancel(); end() }
}

// span begins an operation's span, with tracing on. Reads that the row
// cache may answer take only this: readThrough bounds what goes to the
// database, so a cache hit costs no timer.
func (s *Store) span(ctx context.Context, name string) (context.Context, func()) {
	if s.tracer == nil {
		return ctx, func() {}
	}
	ctx, span := s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system.name", s.dbSystem())))
	return ctx, func() { span.End() }
}

// bound limits ctx to opTimeout, so that a database that stops answering
// yields ErrUnavailable rather than a hang.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.opTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opTimeout)
}

func (s *Store) dbSystem() string {
	if s.dialect == "postgres" {
		return "postgresql"
	}
	return "sqlite"
}

// Trace makes each store call a span of tracer's; call it before the
// store is used. A nil tracer (tracing off) makes none.
func (s *Store) Trace(tracer trace.Tracer) { s.tracer = tracer }

var _ connection.Store = (*Store)(nil)

// gormConfig is shared by every dialect: single statements need no
// transaction of their own, driver errors are translated so a duplicate key
// is recognisable, and the logger prints SQL without parameter values, so
// no token or e-mail address ever reaches a log.
func gormConfig(log *slog.Logger) *gorm.Config {
	return &gorm.Config{
		SkipDefaultTransaction: true,
		// Prepared once per connection, not parsed again for every query.
		PrepareStmt:    true,
		TranslateError: true,
		Logger:         &sqlLogger{log: log},
	}
}

// sqlLogger writes GORM's failures and slow statements through slog with
// the statement's context, so a request's lines carry its request id. It
// logs SQL with placeholders only, never the values (a token, an e-mail).
type sqlLogger struct {
	log *slog.Logger
}

func (l *sqlLogger) LogMode(logger.LogLevel) logger.Interface { return l }

func (l *sqlLogger) Info(ctx context.Context, msg string, args ...any) {
	l.log.InfoContext(ctx, fmt.Sprintf(msg, args...))
}

func (l *sqlLogger) Warn(ctx context.Context, msg string, args ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(msg, args...))
}

func (l *sqlLogger) Error(ctx context.Context, msg string, args ...any) {
	l.log.ErrorContext(ctx, fmt.Sprintf(msg, args...))
}

// ParamsFilter makes GORM render SQL without its values.
func (l *sqlLogger) ParamsFilter(ctx context.Context, sql string, params ...any) (string, []any) {
	return sql, nil
}

// Trace runs after every statement; it only logs what failed or was slow.
func (l *sqlLogger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	elapsed := time.Since(begin)
	switch {
	case errors.Is(err, gorm.ErrDuplicatedKey):
		// An answer, not a failure: the store reports ErrConflict, and
		// the caller reconnects or answers 409 (a connect tries the insert
		// before looking for the connection to reconnect to).
		sql, _ := fc()
		l.log.LogAttrs(ctx, slog.LevelDebug, "sql conflict", slog.String("sql", sql), logging.Millis("took", elapsed))
	case errors.Is(err, connection.ErrTooManyConnections):
		// An answer too (422): PostgreSQL's check of the cap refused a
		// create (createPipelined).
		sql, _ := fc()
		l.log.LogAttrs(ctx, slog.LevelDebug, "sql refused: over the cap", slog.String("sql", sql), logging.Millis("took", elapsed))
	case err != nil && !errors.Is(err, gorm.ErrRecordNotFound):
		sql, _ := fc()
		l.log.LogAttrs(ctx, slog.LevelError, "sql failed", slog.String("sql", sql), logging.Millis("took", elapsed), slog.String("err", err.Error()))
	case elapsed > time.Second:
		sql, _ := fc()
		l.log.LogAttrs(ctx, slog.LevelWarn, "slow sql", slog.String("sql", sql), logging.Millis("took", elapsed))
	}
}

// Close closes the database; call it once requests have drained.
func (s *Store) Close() error {
	if s.batch != nil {
		s.batch.close()
	}
	if s.cache != nil {
		s.cache.close()
	}
	for _, w := range []*writeStmt{s.insertStmt, s.liveCountStmt, s.auditStmt, s.sealingKeyStmt, s.eventStmt, s.revocationStmt,
		s.savepointStmt, s.rollbackToStmt} {
		if w != nil {
			w.stmt.Close()
		}
	}
	err := s.sqlDB.Close()
	if s.rsqlDB != s.sqlDB {
		if rerr := s.rsqlDB.Close(); err == nil {
			err = rerr
		}
	}
	return err
}

// SQLDB is the pool writes use (on SQLite its one connection), for its
// statistics.
func (s *Store) SQLDB() *sql.DB { return s.sqlDB }

// ReadDB is the pool reads use, for its statistics: on SQLite the readers
// beside the writer, on PostgreSQL the same pool as SQLDB.
func (s *Store) ReadDB() *sql.DB { return s.rsqlDB }

// CountByStatus counts stored connections by status, for a gauge
// refreshed every few seconds on every replica, never per request. Each
// count walks a partial index's entries, not the table: at a million
// connections, one pass over the table took 183-229 ms on SQLite and
// 128-133 ms on PostgreSQL at every refresh, the three index walks 26-27
// ms and 50-51 ms. They are one statement, so the counts are of one
// snapshot; active is the live ones less the invalid ones, since the
// schema allows only the three statuses (its CHECK). Errors: the query's.
func (s *Store) CountByStatus(ctx context.Context) (map[string]int64, error) {
	ctx, cancel := s.op(ctx, "store.CountByStatus")
	defer cancel()
	var live, invalid, revoked int64
	if err := s.rsqlDB.QueryRowContext(ctx, countByStatusQuery).Scan(&live, &invalid, &revoked); err != nil {
		return nil, s.wrap("count connections", err)
	}
	return map[string]int64{
		string(connection.StatusActive):  live - invalid,
		string(connection.StatusInvalid): invalid,
		string(connection.StatusRevoked): revoked,
	}, nil
}

// countByStatusQuery counts the live, the invalid and the revoked
// connections, each count written to match a partial index's predicate
// (connections_due, connections_invalid, connections_revoked).
const countByStatusQuery = `SELECT (SELECT COUNT(*) FROM connections WHERE status <> 'revoked'),
	(SELECT COUNT(*) FROM connections WHERE status = 'invalid'),
	(SELECT COUNT(*) FROM connections WHERE status = 'revoked')`

// defaultPruneBatch is how many rows a prune deletes per statement. A
// batch of audit rows holds SQLite's one writer about 24 ms, its commit
// included. Pruning 250,000 in one statement held it 1.1-1.3 s, and the
// creates meanwhile waited that long; in batches the slowest took 42-52
// ms, and the prune 6 s in all.
const defaultPruneBatch = 1000

// prune runs query, a DELETE of up to a batch of rows past cutoff (its
// arguments: cutoff, then the batch's size), until a batch comes up
// short; each batch is a statement and an operation of its own. One
// statement for them all held SQLite's one writer for as long as the
// whole backlog took (a retention lowered, a long outage), so every
// create waited behind it; past the operation's bound it was rolled back,
// and the backlog was never cleared. name names the operation and the
// error. Returns how many rows it deleted. Errors: a batch's (the batches
// before it stay deleted).
func (s *Store) prune(ctx context.Context, name, query string, cutoff int64) (int, error) {
	q := s.rebind(query)
	total := 0
	for {
		n, err := func() (int64, error) {
			ctx, cancel := s.op(ctx, "store."+name)
			defer cancel()
			res := s.db.WithContext(ctx).Exec(q, cutoff, s.pruneBatch)
			return res.RowsAffected, res.Error
		}()
		if err != nil {
			return total, s.wrap(name, err)
		}
		total += int(n)
		if n == 0 || n < int64(s.pruneBatch) {
			return total, nil
		}
	}
}

// Dialect names the database kind: "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.dialect }

// connectionRow is the table layout; times are Unix microseconds.
type connectionRow struct {
	ID                 string `gorm:"primaryKey"`
	ServerURL          string
	EndUserID          *string
	Status             string
	MattermostUserID   string
	MattermostUsername string
	MattermostEmail    string
	MattermostIsBot    bool
	ServerVersion      string
	TokenHint          string
	SealedToken        *string
	Generation         int64
	CreatedAt          int64 `gorm:"autoCreateTime:false"`
	UpdatedAt          int64 `gorm:"autoUpdateTime:false"`
	LastVerifiedAt     *int64
	RevokedAt          *int64
	LastErrorCode      *string
	LastErrorMessage   *string
	LastErrorAt        *int64
	LastCheckedAt      *int64
	NextCheckAt        int64
	InvalidSince       *int64
	MattermostTokenID  string
	EventSeq           int64

	UpstreamRevocationStatus  *string
	UpstreamRevocationMessage *string
	UpstreamRevocationAt      *int64
}

func (connectionRow) TableName() string { return "connections" }

func micros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros reads a stored time (Unix microseconds) as UTC.
func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func microsPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	v := t.UnixMicro()
	return &v
}

func timePtr(v *int64) *time.Time {
	if v == nil {
		return nil
	}
	t := fromMicros(*v)
	return &t
}

func toRow(c connection.Connection) connectionRow {
	r := connectionRow{
		ID:                 c.ID,
		ServerURL:          c.ServerURL,
		EndUserID:          c.EndUserID,
		Status:             string(c.Status),
		MattermostUserID:   c.MattermostUser.ID,
		MattermostUsername: c.MattermostUser.Username,
		MattermostEmail:    c.MattermostUser.Email,
		MattermostIsBot:    c.MattermostUser.IsBot,
		ServerVersion:      c.ServerVersion,
		TokenHint:          c.TokenHint,
		Generation:         c.Generation,
		CreatedAt:          micros(c.CreatedAt),
		UpdatedAt:          micros(c.UpdatedAt),
		LastVerifiedAt:     microsPtr(c.LastVerifiedAt),
		RevokedAt:          microsPtr(c.RevokedAt),
		LastCheckedAt:      microsPtr(c.LastCheckedAt),
		NextCheckAt:        micros(c.NextCheckAt),
		InvalidSince:       microsPtr(c.InvalidSince),
		MattermostTokenID:  c.TokenID,
	}
	if u := c.UpstreamRevocation; u != nil {
		st := string(u.Status)
		r.UpstreamRevocationStatus, r.UpstreamRevocationMessage, r.UpstreamRevocationAt = &st, &u.Message, microsPtr(&u.At)
	}
	if c.SealedToken != nil {
		s := string(c.SealedToken)
		r.SealedToken = &s
	}
	if e := c.LastError; e != nil {
		r.LastErrorCode, r.LastErrorMessage, r.LastErrorAt = &e.Code, &e.Message, microsPtr(&e.At)
	}
	return r
}

func fromRow(r connectionRow) connection.Connection {
	c := connection.Connection{
		ID:        r.ID,
		ServerURL: r.ServerURL,
		EndUserID: r.EndUserID,
		Status:    connection.Status(r.Status),
		MattermostUser: connection.MattermostUser{ID: r.MattermostUserID, Username: r.MattermostUsername, Email: r.MattermostEmail,
			IsBot: r.MattermostIsBot},
		ServerVersion:  r.ServerVersion,
		TokenHint:      r.TokenHint,
		Generation:     r.Generation,
		CreatedAt:      fromMicros(r.CreatedAt),
		UpdatedAt:      fromMicros(r.UpdatedAt),
		LastVerifiedAt: timePtr(r.LastVerifiedAt),
		RevokedAt:      timePtr(r.RevokedAt),
		LastCheckedAt:  timePtr(r.LastCheckedAt),
		NextCheckAt:    fromMicros(r.NextCheckAt),
		InvalidSince:   timePtr(r.InvalidSince),
		TokenID:        r.MattermostTokenID,
	}
	if r.UpstreamRevocationStatus != nil && r.UpstreamRevocationAt != nil {
		c.UpstreamRevocation = &connection.UpstreamRevocation{Status: connection.RevocationStatus(*r.UpstreamRevocationStatus),
			At: *timePtr(r.UpstreamRevocationAt)}
		if r.UpstreamRevocationMessage != nil {
			c.UpstreamRevocation.Message = *r.UpstreamRevocationMessage
		}
	}
	if r.SealedToken != nil {
		c.SealedToken = []byte(*r.SealedToken)
	}
	if r.LastErrorCode != nil && r.LastErrorAt != nil {
		c.LastError = &connection.LastError{Code: *r.LastErrorCode, At: *timePtr(r.LastErrorAt)}
		if r.LastErrorMessage != nil {
			c.LastError.Message = *r.LastErrorMessage
		}
	}
	return c
}

// wrap turns a driver error into a domain error that keeps its cause.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		return connection.ErrNotFound
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return fmt.Errorf("%s: %w: %w", op, connection.ErrConflict, err)
	}
	if kind := s.classify(err); kind != nil {
		return fmt.Errorf("%s: %w: %w", op, kind, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Create implements connection.Store. On SQLite the create is one more
// write of the group commit; on PostgreSQL its transaction is sent as one
// pipelined batch (createPipelined).
func (s *Store) Create(ctx context.Context, c connection.Connection, ch connection.Change) error {
	ctx, cancel := s.op(ctx, "store.Create")
	defer cancel()
	row := toRow(c)
	row.EventSeq = int64(len(ch.Events))
	rest, err := s.changeStmts(c.ID, 1, ch)
	if err != nil {
		return s.wrap("create connection", err)
	}
	stmts := append([]stmt{{s.insertStmt, row.values()}}, rest...)
	capped := ch.MaxLivePerEndUser > 0 && c.EndUserID != nil
	if s.dialect == "postgres" {
		var lc *liveCap
		if capped {
			lc = &liveCap{endUserID: *c.EndUserID, max: ch.MaxLivePerEndUser}
		}
		err = s.createPipelined(ctx, lc, stmts)
	} else {
		err = s.tx(ctx, func(tx *gorm.DB) error {
			var live int64
			if capped {
				var err error
				if live, err = s.liveCount(tx, *c.EndUserID); err != nil {
					return err
				}
			}
			if err := execAll(tx, stmts); err != nil {
				return err // a conflict before the cap, as the contract says
			}
			if capped {
				return overCap(live, ch.MaxLivePerEndUser)
			}
			return nil
		})
	}
	if errors.Is(err, connection.ErrTooManyConnections) {
		return err
	}
	return s.wrap("create connection", err)
}

// liveCount counts an end user's live connections in the transaction tx;
// SQLite runs one write transaction at a time, so the count stands until
// the commit. Errors: the query's.
func (s *Store) liveCount(tx *gorm.DB, endUserID string) (int64, error) {
	count, err := s.liveCountStmt.in(tx)
	if err != nil {
		return 0, err
	}
	var n int64
	err = count.QueryRowContext(tx.Statement.Context, endUserID).Scan(&n)
	return n, err
}

// liveCountQuery counts an end user's live connections.
const liveCountQuery = "SELECT COUNT(*) FROM connections WHERE end_user_id = ? AND status <> 'revoked'"

// overCap is ErrTooManyConnections when an end user's n live connections
// leave no room under max. PostgreSQL checks the same rule in SQL after a
// create's inserts, counting the new connection (liveCapQuery); the store
// contract suite holds both to it.
func overCap(n int64, max int) error {
	if n >= int64(max) {
		return fmt.Errorf("end user has %d live connections: %w", n, connection.ErrTooManyConnections)
	}
	return nil
}

// Get implements connection.Store.
func (s *Store) Get(ctx context.Context, id string) (connection.Connection, error) {
	ctx, end := s.span(ctx, "store.Get")
	defer end()
	row, err := readThrough(s, ctx, (*rowCache).byID, func() string { return id }, func(ctx context.Context) (connectionRow, error) {
		return s.readRow(ctx, s.getQ, id)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return connection.Connection{}, connection.ErrNotFound
	}
	if err != nil {
		return connection.Connection{}, s.wrap("get connection", err)
	}
	return fromRow(row), nil
}

// getQuery reads a connection by id.
const getQuery = "SELECT " + connectionColumns + " FROM connections WHERE id = ?"

// connectionColumns are connectionRow's columns in scanConnection's order.
const connectionColumns = `id, server_url, end_user_id, status, mattermost_user_id, mattermost_username, mattermost_email,
	mattermost_is_bot, server_version, token_hint, sealed_token, generation, created_at, updated_at, last_verified_at, revoked_at,
	last_error_code, last_error_message, last_error_at, last_checked_at, next_check_at, invalid_since, mattermost_token_id,
	event_seq, upstream_revocation_status, upstream_revocation_message, upstream_revocation_at`

// scanConnection reads one row of connectionColumns. The hottest read (a
// get by id, on every status check of an app) skips GORM's statement
// building and reflection.
func scanConnection(row interface{ Scan(...any) error }) (connectionRow, error) {
	var r connectionRow
	err := row.Scan(&r.ID, &r.ServerURL, &r.EndUserID, &r.Status, &r.MattermostUserID, &r.MattermostUsername, &r.MattermostEmail,
		&r.MattermostIsBot, &r.ServerVersion, &r.TokenHint, &r.SealedToken, &r.Generation, &r.CreatedAt, &r.UpdatedAt, &r.LastVerifiedAt,
		&r.RevokedAt, &r.LastErrorCode, &r.LastErrorMessage, &r.LastErrorAt, &r.LastCheckedAt, &r.NextCheckAt, &r.InvalidSince,
		&r.MattermostTokenID, &r.EventSeq, &r.UpstreamRevocationStatus, &r.UpstreamRevocationMessage, &r.UpstreamRevocationAt)
	return r, err
}

// values are r's columns in connectionColumns' order, for insertStmt.
func (r *connectionRow) values() []any {
	return []any{r.ID, r.ServerURL, r.EndUserID, r.Status, r.MattermostUserID, r.MattermostUsername, r.MattermostEmail,
		r.MattermostIsBot, r.ServerVersion, r.TokenHint, r.SealedToken, r.Generation, r.CreatedAt, r.UpdatedAt, r.LastVerifiedAt,
		r.RevokedAt, r.LastErrorCode, r.LastErrorMessage, r.LastErrorAt, r.LastCheckedAt, r.NextCheckAt, r.InvalidSince,
		r.MattermostTokenID, r.EventSeq, r.UpstreamRevocationStatus, r.UpstreamRevocationMessage, r.UpstreamRevocationAt}
}

// prepare readies the hottest writes' statements on the writer pool, and
// the hottest reads' text.
func (s *Store) prepare(ctx context.Context) error {
	s.getQ, s.findLiveQ, s.liveCapQ = s.rebind(getQuery), s.rebind(findLiveQuery), s.rebind(liveCapQuery)
	type prepared struct {
		stmt  **writeStmt
		query string
	}
	writes := []prepared{
		{&s.insertStmt, "INSERT INTO connections (" + connectionColumns + ") VALUES (" + strings.Repeat("?, ", strings.Count(connectionColumns, ",")) + "?)"},
		{&s.auditStmt, "INSERT INTO audit_events (id, at, actor, action, connection_id, client_ip, request_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"},
		{&s.sealingKeyStmt, "INSERT INTO sealing_keys (key_id) VALUES (?) ON CONFLICT (key_id) DO NOTHING"},
		{&s.eventStmt, "INSERT INTO webhook_events (" + eventColumns + ") VALUES (" + strings.Repeat("?, ", strings.Count(eventColumns, ",")) + "?)"},
		{&s.revocationStmt, "INSERT INTO pending_revocations (connection_id, server_url, token_id, sealed_token, attempts, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)"},
	}
	if s.dialect == "sqlite" {
		writes = append(writes, prepared{&s.liveCountStmt, liveCountQuery},
			prepared{&s.savepointStmt, "SAVEPOINT w"}, prepared{&s.rollbackToStmt, "ROLLBACK TO w"})
	}
	for _, p := range writes {
		q := s.rebind(p.query)
		stmt, err := s.sqlDB.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		*p.stmt = &writeStmt{stmt: stmt, query: q}
	}
	return nil
}

// writeStmt is a hot write's statement, prepared once on the writer pool
// and bound to each transaction that runs it. GORM's statement cache
// cannot do this for statements it first prepares inside a transaction:
// database/sql re-prepares such a statement in every later transaction,
// which cost SQLite's one writer about a fifth of its time under
// concurrent creates.
type writeStmt struct {
	stmt  *sql.Stmt
	query string // with placeholders only, for the SQL log
}

// in is w bound to the transaction tx. Errors: tx is not a transaction.
func (w *writeStmt) in(tx *gorm.DB) (*sql.Stmt, error) {
	var sqlTx *sql.Tx
	switch p := tx.Statement.ConnPool.(type) {
	case *sql.Tx:
		sqlTx = p
	case *gorm.PreparedStmtTX:
		sqlTx, _ = p.Tx.(*sql.Tx)
	}
	if sqlTx == nil {
		return nil, fmt.Errorf("not in a transaction (%T)", tx.Statement.ConnPool)
	}
	return sqlTx.StmtContext(tx.Statement.Context, w.stmt), nil
}

// exec runs w with args in the transaction tx. Like GORM's own statements
// it is traced to the SQL log (placeholders, never values) and its errors
// are translated by the dialect (a unique violation is
// gorm.ErrDuplicatedKey).
func (w *writeStmt) exec(tx *gorm.DB, args ...any) error {
	begin := time.Now()
	st, err := w.in(tx)
	n := int64(-1)
	if err == nil {
		var res sql.Result
		if res, err = st.ExecContext(tx.Statement.Context, args...); err == nil {
			n, _ = res.RowsAffected()
		}
	}
	return traced(tx.Statement.Context, tx, begin, func() string { return w.query }, n, err)
}

// traced logs a statement that began at begin and touched n rows (-1 when
// it failed or is not known) to db's SQL log, by its text with
// placeholders (never its values), and translates its error as db's
// dialect does.
func traced(ctx context.Context, db *gorm.DB, begin time.Time, query func() string, n int64, err error) error {
	if t, ok := db.Dialector.(gorm.ErrorTranslator); ok && err != nil {
		err = t.Translate(err)
	}
	db.Logger.Trace(ctx, begin, func() (string, int64) { return query(), n }, err)
	return err
}

// findLiveQuery is written to match the unique index connections_live_key
// exactly: its expression (end_user_id, NULL read as the empty string) and its predicate, the
// literal status (a parameter would not prove the partial index applies).
const findLiveQuery = `SELECT ` + connectionColumns + ` FROM connections
	WHERE server_url = ? AND mattermost_user_id = ? AND COALESCE(end_user_id, '') = ? AND status <> 'revoked' LIMIT 1`

// FindLive implements connection.Store.
func (s *Store) FindLive(ctx context.Context, serverURL, mattermostUserID string, endUserID *string) (connection.Connection, error) {
	ctx, cancel := s.op(ctx, "store.FindLive")
	defer cancel()
	end := ""
	if endUserID != nil {
		end = *endUserID
	}
	row, err := s.readRow(ctx, s.findLiveQ, serverURL, mattermostUserID, end)
	if errors.Is(err, sql.ErrNoRows) {
		return connection.Connection{}, connection.ErrNotFound
	}
	if err != nil {
		return connection.Connection{}, s.wrap("find live connection", err)
	}
	return fromRow(row), nil
}

// List implements connection.Store.
func (s *Store) List(ctx context.Context, f connection.ListFilter) ([]connection.Connection, error) {
	ctx, end := s.span(ctx, "store.List")
	defer end()
	q, args := listQuery(f)
	page, err := readThrough(s, ctx, (*rowCache).byQuery, func() string { return pageKey(q, args) },
		func(ctx context.Context) ([]connectionRow, error) { return s.readRows(ctx, s.rebind(q), args, f.Limit) })
	if err != nil {
		return nil, s.wrap("list connections", err)
	}
	return fromRows(page), nil
}

// readRows runs the read q, whose columns are connectionColumns, and
// scans its rows (limit, the most it returns, sizes the answer). On
// SQLite it goes through the driver itself (readRowsSQLite), whose
// readers keep each query prepared (readerParams); on PostgreSQL through
// pgx itself, which scans each column straight into the row's field,
// where database/sql first boxes it in a driver.Value and then converts
// it: a page of 50 took 857 allocations where it took 1,624, and 202-226
// µs where it took 284-308 (BenchmarkPostgres/ListPage50); over HTTP,
// pages went from 2,274-2,627/s to 3,085-3,290/s (BENCHMARKS.md).
// Errors: the query's; the pool's.
func (s *Store) readRows(ctx context.Context, q string, args []any, limit int) ([]connectionRow, error) {
	if s.dialect == "postgres" {
		return s.readRowsPgx(ctx, q, args, limit)
	}
	return s.readRowsSQLite(ctx, q, args, limit)
}

// raw runs fn on one of db's connections as its driver's own, returned to
// the pool afterwards: the reads and pipelined batches of both databases
// (readRowsSQLite, rawConn). Errors: fn's; the pool's.
func raw(ctx context.Context, db *sql.DB, fn func(dc any) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(fn)
}

// readRow is readRows for a read of one row. Errors: sql.ErrNoRows when
// there is none; readRows'.
func (s *Store) readRow(ctx context.Context, q string, args ...any) (connectionRow, error) {
	rows, err := s.readRows(ctx, q, args, 1)
	if err != nil {
		return connectionRow{}, err
	}
	if len(rows) == 0 {
		return connectionRow{}, sql.ErrNoRows
	}
	return rows[0], nil
}

// scanRows scans every row of rows, the SQLite driver's (driverRows) or
// pgx's. Errors: the first row's that does not scan; rows'.
func scanRows(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
}, limit int) ([]connectionRow, error) {
	out := make([]connectionRow, 0, limit)
	for rows.Next() {
		r, err := scanConnection(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// fromRows makes connections of rows, fresh ones each time (rows may be
// the cache's).
func fromRows(rows []connectionRow) []connection.Connection {
	out := make([]connection.Connection, len(rows))
	for i, r := range rows {
		out[i] = fromRow(r)
	}
	return out
}

// listQuery is the listing query for f, written for its index: the keyset
// position is a row-value comparison, which SQLite and PostgreSQL both
// turn into a range of connections_created (or of
// connections_end_user_created), so a page deep in the keyset reads its
// own rows only. (The equivalent OR of two comparisons made SQLite walk
// the index from its start.)
func listQuery(f connection.ListFilter) (string, []any) {
	var where []string
	var args []any
	if f.EndUserID != nil {
		where, args = append(where, "end_user_id = ?"), append(args, *f.EndUserID)
	}
	if f.Status != nil {
		where, args = append(where, "status = ?"), append(args, string(*f.Status))
	}
	if f.Live {
		where = append(where, "status <> 'revoked'")
	}
	if a := f.After; a != nil {
		where, args = append(where, "(created_at, id) < (?, ?)"), append(args, micros(a.CreatedAt), a.ID)
	}
	q := "SELECT " + connectionColumns + " FROM connections"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return q + " ORDER BY created_at DESC, id DESC LIMIT ?", append(args, f.Limit)
}

// rebind writes ? placeholders as PostgreSQL's $1, $2…
func (s *Store) rebind(q string) string {
	if s.dialect != "postgres" {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Update implements connection.Store. It names every column, so that an
// error cleared is written as NULL (GORM skips zero values in a struct
// update). The UPDATE, as GORM builds it, returns the connection's event
// count, so the events it records are numbered without reading the row
// again: on SQLite it is one more write of the group commit; on
// PostgreSQL it is sent in a pipelined transaction of two round trips
// (updatePipelined). Errors: ErrNotFound; ErrConflict (wrapped) when the
// row changed meanwhile; ErrUnavailable (wrapped) and the database's.
func (s *Store) Update(ctx context.Context, c connection.Connection, expect int64, ch connection.Change) error {
	ctx, cancel := s.op(ctx, "store.Update")
	defer cancel()
	r := toRow(c)
	cols := map[string]any{
		"status":                      r.Status,
		"mattermost_user_id":          r.MattermostUserID,
		"mattermost_username":         r.MattermostUsername,
		"mattermost_email":            r.MattermostEmail,
		"mattermost_is_bot":           r.MattermostIsBot,
		"server_version":              r.ServerVersion,
		"token_hint":                  r.TokenHint,
		"generation":                  r.Generation,
		"updated_at":                  r.UpdatedAt,
		"last_verified_at":            r.LastVerifiedAt,
		"revoked_at":                  r.RevokedAt,
		"last_error_code":             r.LastErrorCode,
		"last_error_message":          r.LastErrorMessage,
		"last_error_at":               r.LastErrorAt,
		"last_checked_at":             r.LastCheckedAt,
		"next_check_at":               r.NextCheckAt,
		"invalid_since":               r.InvalidSince,
		"mattermost_token_id":         r.MattermostTokenID,
		"upstream_revocation_status":  r.UpstreamRevocationStatus,
		"upstream_revocation_message": r.UpstreamRevocationMessage,
		"upstream_revocation_at":      r.UpstreamRevocationAt,
		"event_seq":                   gorm.Expr("event_seq + ?", len(ch.Events)),
	}
	if c.Generation != expect {
		// Only a new token or a revoke moves the generation; a status
		// change never writes the token column.
		cols["sealed_token"] = r.SealedToken
	}
	// update is the conditional UPDATE, which returns the connection's
	// event count, as it moved it, into into.
	update := func(db *gorm.DB, into *connectionRow) *gorm.DB {
		q := db.Model(into).Clauses(clause.Returning{Columns: []clause.Column{{Name: "event_seq"}}}).
			Where("id = ? AND generation = ? AND status <> 'revoked'", c.ID, expect)
		if r.LastCheckedAt != nil && c.Generation == expect {
			// A check's outcome: only if no newer check was recorded. A new
			// token or a revoke is not a check; its generation decides.
			q = q.Where("(last_checked_at IS NULL OR last_checked_at <= ?)", *r.LastCheckedAt)
		}
		return q.Updates(cols)
	}
	var err error
	if s.dialect == "postgres" {
		stmt := s.dryRun(ctx, func(db *gorm.DB) *gorm.DB { return update(db, &connectionRow{}) })
		err = s.updatePipelined(ctx, c.ID, stmt, ch)
	} else {
		err = s.tx(ctx, func(tx *gorm.DB) error {
			// No row returned means the update matched none.
			var moved connectionRow
			res := update(tx, &moved)
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected != 1 {
				var n int64
				if err := tx.Model(&connectionRow{}).Where("id = ?", c.ID).Count(&n).Error; err != nil {
					return err
				}
				return missed(c.ID, n > 0)
			}
			// The events are numbered on from that count; what else the
			// change carries (its audit row, the key that sealed a new
			// token, a pending revocation) needs no number, and is
			// recorded with or without events.
			return s.recordChange(tx, c.ID, moved.EventSeq-int64(len(ch.Events))+1, ch)
		})
	}
	if errors.Is(err, connection.ErrNotFound) || errors.Is(err, connection.ErrConflict) {
		return err
	}
	return s.wrap("update connection", err)
}

// missed is Update's error when its conditional update matched no row:
// ErrNotFound when the connection is gone, ErrConflict when it changed
// meanwhile (a newer generation, a newer check, a revoke).
func missed(id string, exists bool) error {
	if !exists {
		return connection.ErrNotFound
	}
	return fmt.Errorf("update connection %s: changed meanwhile: %w", id, connection.ErrConflict)
}

// Ping implements connection.Store.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var one int
	if err := s.sqlDB.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping: %w: %w", connection.ErrUnavailable, err)
	}
	return nil
}

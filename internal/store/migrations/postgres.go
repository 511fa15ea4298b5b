package migrations

import (
	"context"
	"database/sql"

	"github.com/pressly/goose/v3"
)

// LiveCapSQLState is the SQLSTATE mmconnect_check_live_cap raises: a
// create that would leave its end user over the cap.
const LiveCapSQLState = "MMCAP"

// liveCapUp is version 6 on PostgreSQL: the check that lets a capped
// create end with COMMIT in its one pipelined batch. The batch runs it
// after the create's inserts, with the end user's live count (the new
// connection included); an error aborts the transaction, so the COMMIT
// queued after it commits nothing. Plain SQL has no way to raise an error
// of its own, hence PL/pgSQL, which PostgreSQL installs by default.
const liveCapUp = `CREATE FUNCTION mmconnect_check_live_cap(live bigint, max_live integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF live > max_live THEN
        RAISE EXCEPTION 'end user would have % live connections, over the cap of %', live, max_live
            USING ERRCODE = '` + LiveCapSQLState + `';
    END IF;
END
$$`

const liveCapDown = `DROP FUNCTION mmconnect_check_live_cap(bigint, integer)`

// goMigrations are the migrations written in Go, because only one
// database needs them: a version, the name logs give it where a SQL
// migration's is its file's, and its statements on PostgreSQL.
var goMigrations = []struct {
	version  int64
	name     string
	up, down string
}{
	{6, "00006_live_cap (Go; PostgreSQL only)", liveCapUp, liveCapDown},
}

// Go are the migrations written in Go (postgres: whether the database is
// PostgreSQL). Every version is registered for both, with nothing to run
// where it is not needed, so that a version number means the same point
// of the history on SQLite and on PostgreSQL, and a database migrated by a
// newer mmconnect is recognised alike on both.
func Go(postgres bool) []*goose.Migration {
	out := make([]*goose.Migration, len(goMigrations))
	for i, m := range goMigrations {
		var up, down *goose.GoFunc
		if postgres {
			up, down = exec(m.up), exec(m.down)
		}
		out[i] = goose.NewGoMigration(m.version, up, down)
	}
	return out
}

// GoName is the name of the Go migration of version ("" if there is none).
func GoName(version int64) string {
	for _, m := range goMigrations {
		if m.version == version {
			return m.name
		}
	}
	return ""
}

// exec is a migration step that runs one statement in the migration's
// transaction.
func exec(statement string) *goose.GoFunc {
	return &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, statement)
		return err
	}}
}

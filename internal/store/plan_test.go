package store

import (
	"context"
	"strings"
	"testing"

	"github.com/mmconnect/mmconnect/internal/store/storetest"
)

// The background queries run every few seconds on every replica; each must
// be served by its index, so a rewrite that loses it fails here.
var plannedQueries = []struct {
	name  string
	query string
	args  []any
	index string
}{
	{"find live (reconnect)", findLiveQuery, []any{"https://a", "u", ""}, "connections_live_key"},
	{"get by id", "SELECT * FROM connections WHERE id = ?", []any{"conn_x"}, "PRIMARY KEY|pkey|sqlite_autoindex_connections_1"},
	{"list page", "SELECT * FROM connections ORDER BY created_at DESC, id DESC LIMIT ?", []any{50}, "connections_created"},
	{"list page of an end user", "SELECT * FROM connections WHERE end_user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?", []any{"u", 50}, "connections_end_user_created"},
	{"due re-checks", dueQuery, []any{0, 10}, "connections_due"},
	{"due deliveries", claimQuery, []any{0, 10}, "webhook_events_due"},
	{"delivery queue", claimQuery, []any{0, 10}, "webhook_events_queue"},
}

func TestSQLiteQueryPlans(t *testing.T) {
	s := openTestSQLite(t)
	for _, q := range plannedQueries {
		t.Run(q.name, func(t *testing.T) {
			rows, err := s.sqlDB.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+q.query, q.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			joined := strings.Join(plan, "\n")
			if !usesIndex(joined, q.index) {
				t.Fatalf("plan does not use %s:\n%s", q.index, joined)
			}
			for _, step := range plan {
				// "SCAN t USING INDEX i" walks an index in order (a keyset
				// page reads only its rows); a bare "SCAN t" reads the table.
				if strings.HasPrefix(step, "SCAN ") && !strings.Contains(step, " USING ") {
					t.Fatalf("plan scans a table:\n%s", joined)
				}
			}
		})
	}
}

// On PostgreSQL an empty table is cheapest to scan, so sequential scans are
// switched off for the check: the question is whether the index can serve
// the query at all.
func TestPostgresQueryPlans(t *testing.T) {
	s := openTestPostgres(t, storetest.PostgresURL(t))
	ctx := context.Background()
	conn, err := s.sqlDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	for _, q := range plannedQueries {
		t.Run(q.name, func(t *testing.T) {
			pgQuery := q.query
			for i := 1; strings.Contains(pgQuery, "?"); i++ {
				pgQuery = strings.Replace(pgQuery, "?", "$"+string(rune('0'+i)), 1)
			}
			rows, err := conn.QueryContext(ctx, "EXPLAIN "+pgQuery, q.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			joined := strings.Join(plan, "\n")
			if !usesIndex(joined, q.index) || strings.Contains(joined, "Seq Scan") {
				t.Fatalf("plan does not use %s:\n%s", q.index, joined)
			}
		})
	}
}

// usesIndex tells whether a plan names one of the |-separated indexes.
func usesIndex(plan, indexes string) bool {
	for _, ix := range strings.Split(indexes, "|") {
		if strings.Contains(plan, ix) {
			return true
		}
	}
	return false
}

package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/audit"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/store/storetest"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

type plannedQuery struct {
	name  string
	query string
	args  []any
	index string
	// keyset, when set, names the columns whose row-value comparison
	// must bound the index range (a page deep in a listing reads its own
	// rows, not every row before them).
	keyset string
	// build, when set, makes the query with GORM instead of query and args.
	build func(*gorm.DB) *gorm.DB
}

func listPlanned(name string, f connection.ListFilter, index string) plannedQuery {
	q, args := listQuery(f)
	p := plannedQuery{name: name, query: q, args: args, index: index}
	if f.After != nil {
		p.keyset = "created_at, id"
	}
	return p
}

// gormPlanned is a query GORM builds; each dialect's test builds it.
func gormPlanned(name string, build func(*gorm.DB) *gorm.DB, index, keyset string) plannedQuery {
	return plannedQuery{name: name, build: build, index: index, keyset: keyset}
}

// sql is q as the store s runs it.
func (q plannedQuery) sql(s *Store) (string, []any) {
	if q.build == nil {
		return q.query, q.args
	}
	stmt := q.build(s.rdb.Session(&gorm.Session{DryRun: true})).Find(&[]map[string]any{}).Statement
	return stmt.SQL.String(), stmt.Vars
}

// The hot and the background queries, as the store runs them: each must
// be served by its index, so a rewrite that loses it fails here.
var plannedQueries = func() []plannedQuery {
	end := "u"
	deep := &connection.Position{CreatedAt: time.Unix(1_800_000_000, 0), ID: "conn_x"}
	return []plannedQuery{
		{name: "find live (reconnect)", query: findLiveQuery, args: []any{"https://a", "u", ""}, index: "connections_live_key"},
		{name: "live count of an end user (the cap)", query: liveCountQuery, args: []any{"u"}, index: "connections_end_user_created"},
		{name: "get by id", query: getQuery, args: []any{"conn_x"}, index: "PRIMARY KEY|pkey|sqlite_autoindex_connections_1"},
		listPlanned("list page", connection.ListFilter{Limit: 51}, "connections_created"),
		listPlanned("list page deep in the keyset", connection.ListFilter{Limit: 51, After: deep}, "connections_created"),
		listPlanned("list page of an end user", connection.ListFilter{Limit: 51, EndUserID: &end}, "connections_end_user_created"),
		listPlanned("deep list page of an end user", connection.ListFilter{Limit: 51, EndUserID: &end, After: deep}, "connections_end_user_created"),
		gormPlanned("audit page deep in the keyset", func(db *gorm.DB) *gorm.DB {
			return auditQuery(db, audit.Filter{Limit: 51, After: deep})
		}, "audit_events_at", "at, id"),
		gormPlanned("audit page of a connection, deep", func(db *gorm.DB) *gorm.DB {
			return auditQuery(db, audit.Filter{Limit: 51, ConnectionID: "conn_x", After: deep})
		}, "audit_events_connection", "at, id"),
		gormPlanned("deliveries page deep in the keyset", func(db *gorm.DB) *gorm.DB {
			return deliveriesQuery(db, webhook.ListFilter{Limit: 51, After: deep})
		}, "webhook_events_created", "created_at, id"),
		gormPlanned("failed deliveries page, deep", func(db *gorm.DB) *gorm.DB {
			failed := webhook.StatusFailed
			return deliveriesQuery(db, webhook.ListFilter{Limit: 51, Status: &failed, After: deep})
		}, "webhook_events_status_created", "created_at, id"),
		{name: "the gauge's live count", query: countByStatusQuery, index: "connections_due|connections_live_key"},
		{name: "the gauge's invalid count", query: countByStatusQuery, index: "connections_invalid"},
		{name: "the gauge's revoked count", query: countByStatusQuery, index: "connections_revoked"},
		{name: "audit rows past the retention", query: pruneAuditQuery, args: []any{0, defaultPruneBatch}, index: "audit_events_at"},
		{name: "expired idempotency keys", query: pruneKeysQuery, args: []any{0, defaultPruneBatch}, index: "idempotency_keys_expires"},
		{name: "settled deliveries past keeping", query: pruneSettledQuery, args: []any{0, defaultPruneBatch}, index: "webhook_events_settled"},
		{name: "expired connect sessions", query: pruneSessionsQuery, args: []any{0, defaultPruneBatch}, index: "connect_sessions_expires"},
		{name: "due re-checks", query: dueQuery, args: []any{0, 10}, index: "connections_due"},
		{name: "due deliveries", query: claimQuery, args: []any{0, 10}, index: "webhook_events_due"},
		{name: "delivery queue", query: claimQuery, args: []any{0, 10}, index: "webhook_events_queue"},
	}
}()

func TestSQLiteQueryPlans(t *testing.T) {
	s := openTestSQLite(t)
	for _, q := range plannedQueries {
		t.Run(q.name, func(t *testing.T) {
			query, args := q.sql(s)
			rows, err := s.sqlDB.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+query, args...)
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
				// "SCAN t USING INDEX i" walks an index in order (a first
				// page reads only its rows); a bare "SCAN t" reads the table
				// ("SCAN CONSTANT ROW", a SELECT of subqueries, reads none).
				if strings.HasPrefix(step, "SCAN ") && !strings.Contains(step, " USING ") && step != "SCAN CONSTANT ROW" {
					t.Fatalf("plan scans a table:\n%s", joined)
				}
			}
			if q.keyset != "" && (!strings.Contains(joined, "USING INDEX "+q.index+" (") ||
				!strings.Contains(joined, "("+strings.ReplaceAll(q.keyset, " ", "")+")<(?,?)")) {
				t.Fatalf("the keyset position does not bound the index range:\n%s", joined)
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
			pgQuery, args := q.sql(s)
			for i := 1; strings.Contains(pgQuery, "?"); i++ {
				pgQuery = strings.Replace(pgQuery, "?", "$"+string(rune('0'+i)), 1)
			}
			rows, err := conn.QueryContext(ctx, "EXPLAIN "+pgQuery, args...)
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
			if q.keyset != "" && !strings.Contains(joined, "ROW("+q.keyset+") < ROW(") {
				t.Fatalf("the keyset position does not bound the index range:\n%s", joined)
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

package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/store/storetest"
)

func benchConnection(i int) connection.Connection {
	now := time.Now().UTC().Truncate(time.Microsecond)
	end := fmt.Sprint("bench-", i)
	return connection.Connection{ID: fmt.Sprintf("conn_%026d", i), ServerURL: "https://mm.example.com", EndUserID: &end,
		Status: connection.StatusActive, MattermostUser: connection.MattermostUser{ID: "u", Username: "alice", Email: "a@example.com"},
		ServerVersion: "11.4.0", TokenHint: "wxyz", SealedToken: []byte("mmc1.00000000.c2VhbGVkLXRva2VuLWJ5dGVzLWxvbmctZW5vdWdo"),
		Generation: 1, CreatedAt: now, UpdatedAt: now, LastVerifiedAt: &now}
}

// benchChange is a create's change as the service makes it: with the
// default cap on the end user's live connections, which on PostgreSQL
// adds the advisory lock and the check to the batch.
var benchChange = connection.Change{MaxLivePerEndUser: 25}

// benchSeeded is the first of the connections benchStore stores before its
// benchmarks, so that a read finds its row and a page is full however
// -bench selects them (ids of their own, apart from the ones created).
const benchSeeded = 500_000_000

func benchStore(b *testing.B, s *Store) {
	ctx := context.Background()
	for i := range 1000 {
		if err := s.Create(ctx, benchConnection(benchSeeded+i), connection.Change{}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("Create", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if err := s.Create(ctx, benchConnection(i), benchChange); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A status change with its event and audit row, as a check that
	// finds a token revoked records it (and, here, as its recovery).
	b.Run("Update", func(b *testing.B) {
		c := benchConnection(900_000_000 + b.N) // a connection of its own for each round
		if err := s.Create(ctx, c, benchChange); err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			i++
			next := c
			next.Status = map[bool]connection.Status{true: connection.StatusInvalid, false: connection.StatusActive}[i%2 == 1]
			next.UpdatedAt = c.UpdatedAt.Add(time.Microsecond)
			now := next.UpdatedAt
			ch := connection.Change{Events: []connection.Event{{ID: connection.NewEventID(), Type: connection.EventInvalid, At: now,
				Connection: connection.Snapshot(next)}},
				Audit: &connection.AuditEvent{ID: fmt.Sprint(connection.AuditIDPrefix, "bench-", i), At: now, Actor: "bench",
					Action: "connection.verify", ConnectionID: c.ID}}
			if err := s.Update(ctx, next, c.Generation, ch); err != nil {
				b.Fatal(err)
			}
			c = next
		}
	})
	b.Run("Get", func(b *testing.B) {
		id := benchConnection(benchSeeded).ID
		for b.Loop() {
			if _, err := s.Get(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A read the row cache cannot answer (every read, on PostgreSQL): the
	// reader's statement cache (readerParams) is what this measures.
	b.Run("GetUncached", func(b *testing.B) {
		cache := s.cache
		s.cache = nil
		defer func() { s.cache = cache }()
		id := benchConnection(benchSeeded).ID
		for b.Loop() {
			if _, err := s.Get(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ListPage50", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.List(ctx, connection.ListFilter{Limit: 51}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A connect session, made each time an app opens the Connect page.
	b.Run("CreateSession", func(b *testing.B) {
		i := 0
		now := time.Now()
		for b.Loop() {
			i++
			if err := s.CreateSession(ctx, session.Session{ID: fmt.Sprint("cs_bench", i), TokenHash: fmt.Sprint("bench-hash-", i),
				EndUserID: "u", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	var n atomic.Int64 // outlives the rounds in which the benchmark finds b.N
	b.Run("CreateParallel", func(b *testing.B) {
		b.SetParallelism(16) // 32 concurrent creates on 2 cores, as in the HTTP load run
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(n.Add(1)) + 1_000_000
				if err := s.Create(ctx, benchConnection(i), benchChange); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkSQLite(b *testing.B) { benchStore(b, openTestSQLite(b)) }

func BenchmarkPostgres(b *testing.B) {
	benchStore(b, openTestPostgres(b, storetest.PostgresURL(b)))
}

// BenchmarkFindLive: the reconnect lookup among 2,000 connections of one
// Mattermost account (one per end user), which the index must serve alone.
func BenchmarkFindLive(b *testing.B) {
	s := openTestSQLite(b)
	ctx := context.Background()
	for i := range 2000 {
		if err := s.Create(ctx, benchConnection(i), benchChange); err != nil {
			b.Fatal(err)
		}
	}
	end := "bench-1000"
	for b.Loop() {
		if _, err := s.FindLive(ctx, "https://mm.example.com", "u", &end); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateIDs: concurrent creates, each with its audit row as over
// HTTP, into 20,000 stored connections, with wholly random ids against
// time-ordered ones (connection.OrderedID, which connections, audit events
// and webhook events use).
func BenchmarkCreateIDs(b *testing.B) {
	for _, tc := range []struct {
		name  string
		newID func(prefix string) string
	}{{"random", connection.RandomID}, {"ordered", connection.OrderedID}} {
		b.Run(tc.name, func(b *testing.B) {
			s := openTestSQLite(b)
			ctx := context.Background()
			create := func(i int) error {
				c := benchConnection(i)
				c.ID = tc.newID("conn_")
				return s.Create(ctx, c, connection.Change{Audit: &connection.AuditEvent{ID: tc.newID(connection.AuditIDPrefix),
					At: c.CreatedAt, Actor: "bench", Action: connection.AuditConnectionCreated, ConnectionID: c.ID}})
			}
			for i := range 20_000 {
				if err := create(i); err != nil {
					b.Fatal(err)
				}
			}
			var n atomic.Int64
			b.ResetTimer()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := create(int(n.Add(1)) + 1_000_000); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

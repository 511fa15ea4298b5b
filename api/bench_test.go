package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkCreateConnection: a whole POST /connections: parse, check the
// token against Mattermost over (kept-alive) TLS, seal, insert in SQLite.
func BenchmarkCreateConnection(b *testing.B) {
	h := newHarness(b)
	i := 0
	for b.Loop() {
		i++
		if err := benchCreate(h, i); err != nil {
			b.Fatal(err)
		}
	}
}

// benchCreate creates a connection of tokenA's account for end user i.
func benchCreate(h *harness, i int) error {
	body := fmt.Sprintf(`{"server_url":%q,"token":%q,"end_user_id":"bench-%d"}`, h.mm.URL, tokenA, i)
	req := httptest.NewRequest("POST", "/connections", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		return fmt.Errorf("%d %s", rec.Code, rec.Body)
	}
	return nil
}

// BenchmarkGetConnection: GET /connections/{id} from SQLite.
func BenchmarkGetConnection(b *testing.B) {
	h := newHarness(b)
	id := h.connect(tokenA, nil)["id"].(string)
	for b.Loop() {
		req := httptest.NewRequest("GET", "/connections/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+h.key)
		rec := httptest.NewRecorder()
		h.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkListConnections: GET /connections?limit=50, a full first page
// from SQLite (the store, the JSON of 50 connections, the access log).
func BenchmarkListConnections(b *testing.B) {
	h := newHarness(b)
	for i := range 60 {
		if err := benchCreate(h, i); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		req := httptest.NewRequest("GET", "/connections?limit=50", nil)
		req.Header.Set("Authorization", "Bearer "+h.key)
		rec := httptest.NewRecorder()
		h.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkCreateConnectionParallel: concurrent creates, each for its own
// end user, so the group commit and the upstream client's pool are in play.
func BenchmarkCreateConnectionParallel(b *testing.B) {
	h := newHarness(b)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := benchCreate(h, int(n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkCreateConnection: a whole POST /connections: parse, check the
// token against Mattermost over (kept-alive) TLS, seal, insert in SQLite.
func BenchmarkCreateConnection(b *testing.B) {
	h := newHarness(b)
	i := 0
	for b.Loop() {
		i++
		body := fmt.Sprintf(`{"server_url":%q,"token":%q,"end_user_id":"bench-%d"}`, h.mm.URL, tokenA, i)
		req := httptest.NewRequest("POST", "/connections", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+h.key)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
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

package api_test

import (
	"bytes"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/secret"
)

// The Stripe rule: the same key with the same body replays the first
// answer without a second upstream call; another body is refused; keys are
// the caller's own; only final answers are kept.
func TestIdempotentCreates(t *testing.T) {
	other := "other:" + secret.NewAPIKey()
	h := newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", origins: []string{"https://app.example.com"}, extraKeys: []string{other}})
	body := map[string]any{"server_url": h.mm.URL, "token": tokenA, "end_user_id": "u1"}
	withKey := func(k string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + h.key, "Idempotency-Key": k}
	}
	first := h.doWith("POST", "/connections", body, withKey("k-1"))
	if first.Status != 201 || first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first = %d %v", first.Status, first.Header)
	}
	calls := h.mm.Requests()
	again := h.doWith("POST", "/connections", body, withKey("k-1"))
	if again.Status != 201 || !bytes.Equal(again.Body, first.Body) || again.Header.Get("Idempotent-Replayed") != "true" ||
		again.Header.Get("Location") != first.Header.Get("Location") {
		t.Fatalf("replay = %d %s %v; want the first answer again", again.Status, again.Body, again.Header)
	}
	if h.mm.Requests() != calls {
		t.Fatal("a replay called Mattermost")
	}
	changed := map[string]any{"server_url": h.mm.URL, "token": tokenB, "end_user_id": "u1"}
	expectProblem(t, h.doWith("POST", "/connections", changed, withKey("k-1")), 422, "idempotency_key_reused")

	// Another caller's key of the same name is another key.
	_, otherKey := secret.ParseNamedKey(other)
	res := h.doWith("POST", "/connections", body, map[string]string{"Authorization": "Bearer " + otherKey, "Idempotency-Key": "k-1"})
	if res.Status != 200 || res.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("another API key with the same key = %d %v; want its own request (a reconnect)", res.Status, res.Header)
	}

	// A client error is final and replayed; a server failure is not kept,
	// so the same key can be retried.
	bad := map[string]any{"server_url": "ftp://x", "token": tokenA}
	r1 := h.doWith("POST", "/connections", bad, withKey("k-bad"))
	expectProblem(t, r1, 422, "validation_failed")
	r2 := h.doWith("POST", "/connections", bad, withKey("k-bad"))
	if r2.Status != 422 || !bytes.Equal(r1.Body, r2.Body) || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a final 4xx was not replayed: %d %s", r2.Status, r2.Body)
	}
	h.mm.Override(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	retry := map[string]any{"server_url": h.mm.URL, "token": tokenB, "end_user_id": "u2"}
	expectProblem(t, h.doWith("POST", "/connections", retry, withKey("k-retry")), 502, "upstream_error")
	h.mm.Override(nil)
	if res := h.doWith("POST", "/connections", retry, withKey("k-retry")); res.Status != 201 || res.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry after a 502 = %d %v; want the work done now", res.Status, res.Header)
	}
	expectProblem(t, h.doWith("POST", "/connections", body, withKey("spaces are not allowed")), 400, "invalid_request")

	// A day later the key is free again.
	h.advance(25 * time.Hour)
	if res := h.doWith("POST", "/connections", changed, withKey("k-1")); res.Status == 422 {
		t.Fatalf("an expired key still refuses another body: %s", res.Body)
	}
}

// A session's answer holds its token: replayed whole, stored sealed.
func TestIdempotentSessions(t *testing.T) {
	h := newHarness(t)
	hdr := map[string]string{"Authorization": "Bearer " + h.key, "Idempotency-Key": "sess-1"}
	a := h.doWith("POST", "/connect/sessions", map[string]any{"end_user_id": "u1"}, hdr)
	b := h.doWith("POST", "/connect/sessions", map[string]any{"end_user_id": "u1"}, hdr)
	if a.Status != 201 || b.Status != 201 || !bytes.Equal(a.Body, b.Body) {
		t.Fatalf("session replay = %d %s / %d %s", a.Status, a.Body, b.Status, b.Body)
	}
	token := a.json(t)["token"].(string)
	h.secrets = append(h.secrets, token)
	if bytes.Contains(h.dataDirBytes(), []byte(token)) {
		t.Fatal("the stored answer holds the session token in plain")
	}
}

// A request whose key is still in flight is told so (409), not run twice.
func TestIdempotencyKeyInFlight(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	h.mm.Override(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	hdr := map[string]string{"Authorization": "Bearer " + h.key, "Idempotency-Key": "slow"}
	body := map[string]any{"server_url": h.mm.URL, "token": tokenA}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.doWith("POST", "/connections", body, hdr)
	}()
	<-entered
	res := h.doWith("POST", "/connections", body, hdr)
	close(release)
	wg.Wait()
	expectProblem(t, res, 409, "idempotency_key_in_use")
	if res.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
}

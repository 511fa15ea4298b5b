package api_test

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/api"
	"github.com/mmconnect/mmconnect/internal/secret"
)

func limitedHarness(t *testing.T, extraKey string, trusted ...string) *harness {
	var proxies []netip.Prefix
	for _, p := range trusted {
		proxies = append(proxies, netip.MustParsePrefix(p))
	}
	return newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", origins: []string{"https://app.example.com"},
		limits: &api.RateLimits{
			PerAPIKey:  api.Rate{N: 4, Period: time.Minute},
			PerSession: api.Rate{N: 3, Period: time.Minute},
			PerIP:      api.Rate{N: 5, Period: time.Minute},
		},
		extraKeys: []string{extraKey}, trustedProxies: proxies, metrics: true})
}

// expectRefusals checks the refusals /metrics counts, by limit.
func expectRefusals(t *testing.T, h *harness, want map[string]int) {
	t.Helper()
	res := h.do("GET", "/metrics", nil)
	for limit, n := range want {
		line := fmt.Sprintf(`mmconnect_rate_limited_total{limit=%q} %d`, limit, n)
		if res.Status != 200 || !strings.Contains(string(res.Body), "\n"+line+"\n") {
			t.Errorf("metrics (%d) lack %s", res.Status, line)
		}
	}
}

// expectRateLimited checks a 429 rate_limited with a Retry-After that a
// client can wait out, and that Mattermost was not called for it.
func expectRateLimited(t *testing.T, h *harness, res response, before int64) {
	t.Helper()
	expectProblem(t, res, 429, "rate_limited")
	secs, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > 60 {
		t.Fatalf("Retry-After = %q", res.Header.Get("Retry-After"))
	}
	if h.mm.Requests() != before {
		t.Fatal("a rate-limited request reached Mattermost")
	}
}

// Connects and verifies, which make mmconnect call out, are limited per API
// key: one key's flood does not stop another key.
func TestRateLimitPerAPIKey(t *testing.T) {
	other := "other:" + secret.NewAPIKey()
	h := limitedHarness(t, other)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	for range 3 { // 4 in all with the connect
		if res := h.do("POST", "/connections/"+id+"/verify", nil); res.Status != 200 {
			t.Fatalf("verify within the limit = %d %s", res.Status, res.Body)
		}
	}
	before := h.mm.Requests()
	expectRateLimited(t, h, h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenB}), before)
	expectRateLimited(t, h, h.do("POST", "/connections/"+id+"/verify", nil), before)
	if res := h.do("GET", "/connections/"+id, nil); res.Status != 200 {
		t.Fatalf("a read is not limited: %d", res.Status)
	}
	_, otherKey := secret.ParseNamedKey(other)
	res := h.doWith("POST", "/connections/"+id+"/verify", nil, map[string]string{"Authorization": "Bearer " + otherKey})
	if res.Status != 200 {
		t.Fatalf("another API key was limited too: %d", res.Status)
	}
	h.advance(20 * time.Second) // refills one request (4 a minute)
	if res := h.do("POST", "/connections/"+id+"/verify", nil); res.Status != 200 {
		t.Fatalf("after waiting, verify = %d", res.Status)
	}
	expectRefusals(t, h, map[string]int{"api_key": 2, "session": 0, "ip": 0})
}

// Connect sessions are limited per session and per client address, and
// X-Forwarded-For counts only from a trusted proxy.
func TestRateLimitPerSessionAndAddress(t *testing.T) {
	h := limitedHarness(t, "spare:"+secret.NewAPIKey(), "10.0.0.0/8")
	post := func(token, remote, xff string) response {
		req := map[string]string{"Authorization": "Bearer " + token, "X-Test-Remote-Addr": remote}
		if xff != "" {
			req["X-Forwarded-For"] = xff
		}
		return h.doWith("POST", "/connections", map[string]any{"server_url": "bad url", "token": tokenA}, req)
	}
	_, s1 := h.openSession("u1")
	for i := range 3 {
		if res := post(s1, "198.51.100.7:1234", ""); res.Status != 422 {
			t.Fatalf("request %d within the session's limit = %d %s", i, res.Status, res.Body)
		}
	}
	before := h.mm.Requests()
	res := post(s1, "198.51.100.7:1234", "")
	expectRateLimited(t, h, res, before)
	if !strings.Contains(string(res.Body), "this connect session") {
		t.Fatalf("the problem does not say which limit: %s", res.Body)
	}
	// A new session from the same address: the address has 2 of its 5 left.
	_, s2 := h.openSession("u2")
	for range 2 {
		if res := post(s2, "198.51.100.7:1234", ""); res.Status != 422 {
			t.Fatalf("second session within the address's limit = %d", res.Status)
		}
	}
	res = post(s2, "198.51.100.7:1234", "")
	expectRateLimited(t, h, res, before)
	if !strings.Contains(string(res.Body), "this address") {
		t.Fatalf("the problem does not say which limit: %s", res.Body)
	}
	// Behind the trusted proxy the forwarded address counts, and it is
	// another one; from an untrusted peer the header is ignored.
	_, s3 := h.openSession("u3")
	if res := post(s3, "10.1.2.3:5555", "203.0.113.9"); res.Status != 422 {
		t.Fatalf("a forwarded address with its own budget = %d", res.Status)
	}
	_, s4 := h.openSession("u4")
	expectRateLimited(t, h, post(s4, "198.51.100.7:1234", "203.0.113.10"), before)
	expectRefusals(t, h, map[string]int{"api_key": 0, "session": 1, "ip": 2})
}

// One end user cannot fill the database: a cap on live connections, which
// a reconnect never counts against.
func TestCapPerEndUser(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", maxPerEndUser: 2})
	h.mm.AddToken(unknownT, mattermosttestUserC())
	a := h.connect(tokenA, strp("u1"))["id"].(string)
	h.connect(tokenB, strp("u1"))
	before := h.mm.Requests()
	p := expectProblem(t, h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": unknownT, "end_user_id": "u1"}), 422, "too_many_connections")
	if !strings.Contains(p["detail"].(string), "Revoke one") || h.mm.Requests() == before {
		t.Fatalf("detail %v", p["detail"])
	}
	if res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA2, "end_user_id": "u1"}); res.Status != 200 {
		t.Fatalf("a reconnect at the cap = %d %s", res.Status, res.Body)
	}
	h.do("DELETE", "/connections/"+a+"?revoke_upstream=false", nil)
	if res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": unknownT, "end_user_id": "u1"}); res.Status != 201 {
		t.Fatalf("after a revoke = %d %s", res.Status, res.Body)
	}
	for _, tok := range []string{tokenA, tokenB} { // no end user: no cap
		if res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tok}); res.Status != 201 {
			t.Fatalf("a connection without an end user = %d", res.Status)
		}
	}
}

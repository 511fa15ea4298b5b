package api_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/websocket"
)

// upstreamSeen is one request as the fake Mattermost received it.
type upstreamSeen struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   string
}

// recordUpstream answers every request with answer and keeps what arrived.
func recordUpstream(h *harness, answer func(w http.ResponseWriter, r *http.Request)) func() []upstreamSeen {
	var mu sync.Mutex
	var seen []upstreamSeen
	h.mm.Override(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, upstreamSeen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(body)})
		mu.Unlock()
		answer(w, r)
	})
	return func() []upstreamSeen {
		mu.Lock()
		defer mu.Unlock()
		return append([]upstreamSeen(nil), seen...)
	}
}

// Method, path (under a subpath install), query and body arrive as sent,
// with the stored token and none of the caller's credentials; the answer
// comes back as Mattermost gave it, without its cookies.
func TestProxyForwardsAsSent(t *testing.T) {
	h := newHarness(t)
	h.mm.ServeUnder("/mattermost")
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	seen := recordUpstream(h, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "MMAUTHTOKEN=secret; Path=/")
		w.Header().Set("X-Version-Id", "11.4.0.x.y.false")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"post1","message":"hello"}`)
	})
	res := h.doWith("POST", "/connections/"+id+"/proxy/api/v4/posts?set_online=false&x=%20y", `{"channel_id":"c1","message":"hello"}`,
		map[string]string{"Authorization": "Bearer " + h.key, "Content-Type": "application/json", "Accept": "application/json",
			"Cookie": "MMAUTHTOKEN=caller", "X-Forwarded-For": "203.0.113.1", "Forwarded": "for=203.0.113.1", "X-Custom": "nope"})
	if res.Status != 201 || string(res.Body) != `{"id":"post1","message":"hello"}` {
		t.Fatalf("proxied answer = %d %s", res.Status, res.Body)
	}
	if res.Header.Get("Set-Cookie") != "" || res.Header.Get("Mmconnect-Upstream") != "true" ||
		res.Header.Get("Mmconnect-Connection-Id") != id || res.Header.Get("X-Version-Id") == "" {
		t.Fatalf("answer headers = %v", res.Header)
	}
	got := seen()
	if len(got) != 1 {
		t.Fatalf("%d upstream requests, want 1", len(got))
	}
	up := got[0]
	if up.Method != "POST" || up.Path != "/mattermost/api/v4/posts" || up.RawQuery != "set_online=false&x=%20y" || up.Body != `{"channel_id":"c1","message":"hello"}` {
		t.Fatalf("upstream got %s %s?%s %q", up.Method, up.Path, up.RawQuery, up.Body)
	}
	if up.Header.Get("Authorization") != "Bearer "+tokenA {
		t.Fatal("the stored token did not go in Authorization")
	}
	for _, name := range []string{"Cookie", "X-Forwarded-For", "Forwarded", "X-Custom"} {
		if up.Header.Get(name) != "" {
			t.Errorf("the caller's %s reached Mattermost", name)
		}
	}
	if up.Header.Get("Content-Type") != "application/json" || up.Header.Get("Accept") != "application/json" ||
		up.Header.Get("X-Request-Id") != res.Header.Get("X-Request-Id") {
		t.Errorf("forwarded headers = %v", up.Header)
	}
	if strings.Contains(up.Header.Get("Authorization"), h.key) {
		t.Fatal("the API key reached Mattermost")
	}
	// The proxied call is in the audit trail, with method, path and status only.
	ev := h.do("GET", "/audit-events?action=connection.proxy", nil).json(t)["data"].([]any)[0].(map[string]any)
	if ev["detail"] != "POST api/v4/posts 201" || ev["connection_id"] != id {
		t.Fatalf("audit event = %v", ev)
	}
}

// What is refused never reaches Mattermost.
func TestProxyRefusedPaths(t *testing.T) {
	h := newHarness(t)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	seen := recordUpstream(h, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"login", 400, "invalid_request"},
		{"api/v3/users/me", 400, "invalid_request"},
		{"api/v4", 400, "invalid_request"},
		{"api/v4/../../admin", 400, "invalid_request"},
		{"api/v4/users/./me", 400, "invalid_request"},
		{"api/v4/users%2Fme", 400, "invalid_request"},
		{"api/v4/users%5cme", 400, "invalid_request"},
		{"api/v4/users/%2e%2e/x", 400, "invalid_request"},
		{"api/v4/users/me/tokens", 403, "forbidden"},
		{"api/v4/users/b95oboh88frobdioocwwdoqhdc/tokens", 403, "forbidden"},
		{"api/v4/users/tokens/revoke", 403, "forbidden"},
		{"api/v4/users/login", 403, "forbidden"},
		{"api/v4/users/login/switch", 403, "forbidden"},
		{"api/v4/users/me/sessions", 403, "forbidden"},
		// Empty segments: a proxy in front of Mattermost that merges
		// slashes would pass these on as the token paths above.
		{"api/v4/users/me//tokens", 400, "invalid_request"},
		{"api/v4/users//me/tokens", 400, "invalid_request"},
		{"api/v4//users/login", 400, "invalid_request"},
		{"api/v4/users///sessions", 400, "invalid_request"},
	} {
		res := h.do("POST", "/connections/"+id+"/proxy/"+tc.path, nil)
		expectProblem(t, res, tc.status, tc.code)
		if res.Header.Get("Mmconnect-Upstream") != "" {
			t.Errorf("%s: an answer of mmconnect's own carries Mmconnect-Upstream", tc.path)
		}
	}
	if n := len(seen()); n != 0 {
		t.Fatalf("%d refused requests reached Mattermost", n)
	}
	// A connect session may not proxy; a revoked connection is gone.
	_, sess := h.openSession("u1")
	expectProblem(t, h.doWith("GET", "/connections/"+id+"/proxy/api/v4/users/me", nil, map[string]string{"Authorization": "Bearer " + sess}), 403, "forbidden")
	h.do("DELETE", "/connections/"+id+"?revoke_upstream=false", nil)
	expectProblem(t, h.do("GET", "/connections/"+id+"/proxy/api/v4/users/me", nil), 409, "connection_revoked")
	if n := len(seen()); n != 0 {
		t.Fatalf("%d refused requests reached Mattermost", n)
	}

	// The operator can open the token paths.
	open := newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", allowTokenPaths: true})
	oid := open.connect(tokenA, strp("u1"))["id"].(string)
	if res := open.do("GET", "/connections/"+oid+"/proxy/api/v4/users/me/sessions", nil); res.Status != 200 {
		t.Fatalf("token paths opened: %d %s", res.Status, res.Body)
	}
}

// A body over MMCONNECT_PROXY_MAX_BODY is 413, whether its length is
// announced or not, and nothing of it is answered by Mattermost.
func TestProxyMaxBody(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", proxyMaxBody: 1 << 10})
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	seen := recordUpstream(h, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	expectProblem(t, h.do("POST", "/connections/"+id+"/proxy/api/v4/files", strings.Repeat("x", 2<<10)), 413, "payload_too_large")
	if n := len(seen()); n != 0 {
		t.Fatalf("%d oversized requests reached Mattermost", n)
	}
	if res := h.do("POST", "/connections/"+id+"/proxy/api/v4/files", strings.Repeat("x", 1<<10)); res.Status != 200 {
		t.Fatalf("a body at the limit = %d", res.Status)
	}
}

// A redirect, even to another host, comes back as it is: never followed.
func TestProxyReturnsRedirects(t *testing.T) {
	h := newHarness(t)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	seen := recordUpstream(h, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.example.com/steal", http.StatusFound)
	})
	res := h.do("GET", "/connections/"+id+"/proxy/api/v4/files/f1", nil)
	if res.Status != 302 || res.Header.Get("Location") != "https://elsewhere.example.com/steal" || len(seen()) != 1 {
		t.Fatalf("redirect = %d %v after %d requests", res.Status, res.Header, len(seen()))
	}
}

// Truth from traffic: Mattermost's dead-token 401 makes the connection
// invalid (with its event), a later 2xx active again; other 401s and 403s
// change nothing.
func TestProxyTruthFromTraffic(t *testing.T) {
	h := newHarness(t)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	status := func() string { return h.do("GET", "/connections/"+id, nil).json(t)["status"].(string) }
	answer := func(code int, body string) {
		recordUpstream(h, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			io.WriteString(w, body)
		})
	}
	for _, tc := range []struct {
		code int
		body string
	}{
		{401, `{"id":"api.user.login.invalid_credentials_email_username","message":"Enter a valid email or username and/or password.","status_code":401}`},
		{401, `<html>401 from a proxy in front</html>`},
		{403, `{"id":"api.context.permissions.app_error","message":"You do not have the appropriate permissions.","status_code":403}`},
	} {
		answer(tc.code, tc.body)
		if res := h.do("GET", "/connections/"+id+"/proxy/api/v4/users/me", nil); res.Status != tc.code || string(res.Body) != tc.body {
			t.Fatalf("proxied %d = %d %s", tc.code, res.Status, res.Body)
		}
		if got := status(); got != "active" {
			t.Fatalf("a %d (%.40s) made the connection %s", tc.code, tc.body, got)
		}
	}
	answer(401, `{"id":"api.context.session_expired.app_error","message":"Invalid or expired session, please login again.","detailed_error":"","request_id":"x","status_code":401}`)
	if res := h.do("GET", "/connections/"+id+"/proxy/api/v4/users/me", nil); res.Status != 401 || !strings.Contains(string(res.Body), "session_expired") {
		t.Fatalf("the dead-token answer was not passed on: %d %s", res.Status, res.Body)
	}
	c := h.do("GET", "/connections/"+id, nil).json(t)
	if c["status"] != "invalid" || c["invalid_since"] == nil || c["last_error"].(map[string]any)["code"] != "token_rejected" {
		t.Fatalf("after a dead-token 401: %v", c)
	}
	answer(200, `{"id":"b95oboh88frobdioocwwdoqhdc"}`)
	res := h.do("GET", "/connections/"+id+"/proxy/api/v4/users/me", nil)
	if res.Status != 200 || res.Header.Get("Mmconnect-Connection-Status") != "invalid" {
		t.Fatalf("an invalid connection is still proxied and says so: %d %v", res.Status, res.Header)
	}
	if got := status(); got != "active" {
		t.Fatalf("after a 2xx: %s, want active", got)
	}
	var types []string
	for _, d := range h.do("GET", "/webhooks/deliveries?limit=10", nil).json(t)["data"].([]any) {
		types = append([]string{d.(map[string]any)["type"].(string)}, types...)
	}
	if strings.Join(types, ",") != "connection.created,connection.invalid,connection.recovered" {
		t.Fatalf("events = %v", types)
	}
}

// Retries on request: idempotent methods only, on 502/503/504/429.
func TestProxyRetries(t *testing.T) {
	h := newHarness(t)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	var n atomic.Int64
	seen := recordUpstream(h, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	hdr := map[string]string{"Authorization": "Bearer " + h.key, "Mmconnect-Retries": "2"}
	if res := h.doWith("GET", "/connections/"+id+"/proxy/api/v4/users/me", nil, hdr); res.Status != 200 || string(res.Body) != "ok" || len(seen()) != 3 {
		t.Fatalf("GET with 2 retries over 503, 503, 200 = %d after %d requests", res.Status, len(seen()))
	}
	n.Store(0)
	seen = recordUpstream(h, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	if res := h.doWith("POST", "/connections/"+id+"/proxy/api/v4/posts", `{"message":"once"}`, hdr); res.Status != 503 || len(seen()) != 1 {
		t.Fatalf("POST over a 503 = %d after %d requests; want it sent once", res.Status, len(seen()))
	}
	seen = recordUpstream(h, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	if res := h.doWith("PUT", "/connections/"+id+"/proxy/api/v4/users/me/patch", `{}`, hdr); res.Status != 429 || len(seen()) != 3 {
		t.Fatalf("PUT over 429s = %d after %d requests; want 3 tries", res.Status, len(seen()))
	}
	expectProblem(t, h.doWith("GET", "/connections/"+id+"/proxy/api/v4/users/me", nil, map[string]string{"Authorization": "Bearer " + h.key, "Mmconnect-Retries": "9"}), 400, "invalid_request")
}

// Over a real listener: a websocket upgrade passes with the token added at
// the upgrade, and 100 MiB go up and down with flat memory.
func TestProxyStreamsAndUpgrades(t *testing.T) {
	h := newHarness(t)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	srv := httptest.NewServer(h.handler)
	defer srv.Close()
	const size = 100 << 20
	var upgradeAuth atomic.Value
	var received atomic.Int64
	// Like Mattermost, the upstream accepts a server-side client without an
	// Origin (the caller's Origin is not forwarded).
	ws := websocket.Server{Handler: func(conn *websocket.Conn) { io.Copy(conn, conn) }}
	h.mm.Override(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v4/websocket":
			upgradeAuth.Store(r.Header.Get("Authorization"))
			ws.ServeHTTP(w, r)
		case "/api/v4/files":
			n, _ := io.Copy(io.Discard, r.Body)
			received.Store(n)
			fmt.Fprintf(w, `{"received":%d}`, n)
		case "/api/v4/files/big":
			w.Header().Set("Content-Length", strconv.Itoa(size))
			io.CopyN(w, zeros{}, size)
		}
	})

	// Websocket echo.
	cfg, _ := websocket.NewConfig(strings.Replace(srv.URL, "http", "ws", 1)+"/connections/"+id+"/proxy/api/v4/websocket", srv.URL)
	cfg.Header.Set("Authorization", "Bearer "+h.key)
	conn, err := websocket.DialConfig(cfg)
	if err != nil {
		req, _ := http.NewRequest("GET", srv.URL+"/connections/"+id+"/proxy/api/v4/websocket", nil)
		req.Header.Set("Authorization", "Bearer "+h.key)
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Version", "13")
		resp, _ := http.DefaultClient.Do(req)
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("websocket through the proxy: %v (a plain upgrade request gets %d %s)", err, resp.StatusCode, b)
	}
	websocket.Message.Send(conn, "ping")
	var echo string
	if err := websocket.Message.Receive(conn, &echo); err != nil || echo != "ping" {
		t.Fatalf("echo = %q, %v", echo, err)
	}
	conn.Close()
	if upgradeAuth.Load() != "Bearer "+tokenA {
		t.Fatalf("the upgrade carried Authorization %v, want the stored token", upgradeAuth.Load())
	}

	// 100 MiB up, 100 MiB down, with the peak RSS of this process (the
	// server runs in it) growing by less than 32 MiB.
	resetPeakRSS(t)
	before := peakRSS(t)
	req, _ := http.NewRequest("POST", srv.URL+"/connections/"+id+"/proxy/api/v4/files", io.LimitReader(zeros{}, size))
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || received.Load() != size {
		t.Fatalf("upload = %d, %d bytes arrived", resp.StatusCode, received.Load())
	}
	req, _ = http.NewRequest("GET", srv.URL+"/connections/"+id+"/proxy/api/v4/files/big", nil)
	req.Header.Set("Authorization", "Bearer "+h.key)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != size {
		t.Fatalf("download = %d bytes", n)
	}
	if growth := peakRSS(t) - before; growth > 32<<20 {
		t.Fatalf("peak RSS grew by %d MiB moving 2 × 100 MiB; want under 32", growth>>20)
	} else {
		t.Logf("peak RSS grew by %.1f MiB moving 2 × 100 MiB", float64(growth)/(1<<20))
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// resetPeakRSS starts the kernel's peak-RSS count (VmHWM) afresh.
func resetPeakRSS(t *testing.T) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS here: %v", err)
	}
}

func peakRSS(t *testing.T) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

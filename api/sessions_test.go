package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"
)

// openSession opens a connect session for endUser with the API key.
func (h *harness) openSession(endUser string) (id, token string) {
	h.t.Helper()
	res := h.do("POST", "/connect/sessions", map[string]any{"end_user_id": endUser})
	if res.Status != http.StatusCreated {
		h.t.Fatalf("open session: %d %s", res.Status, res.Body)
	}
	s := res.json(h.t)
	token = s["token"].(string)
	h.secrets = append(h.secrets, token)
	if s["connect_url"] != h.publicURL+"/connect#session="+token {
		h.t.Fatalf("connect_url = %v", s["connect_url"])
	}
	h.lastConnectURL = s["connect_url"].(string)
	return s["id"].(string), token
}

func (h *harness) asSession(token, method, path string, body any) response {
	h.t.Helper()
	return h.doWith(method, path, body, map[string]string{"Authorization": "Bearer " + token})
}

func TestSessionScoping(t *testing.T) {
	h := newHarness(t)
	other := h.connect(tokenB, strp("bob")) // another end user's connection
	none := h.connect(tokenA, nil)          // the app's own, without end user
	_, tok := h.openSession("alice")

	// Create: the session's end user is filled in; another is forbidden.
	res := h.asSession(tok, "POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA})
	if res.Status != 201 || res.json(t)["end_user_id"] != "alice" {
		t.Fatalf("session create = %d %s", res.Status, res.Body)
	}
	own := res.json(t)["id"].(string)
	res = h.asSession(tok, "POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA2, "end_user_id": "alice"})
	if res.Status != 200 || res.json(t)["id"] != own {
		t.Fatalf("session reconnect = %d %s", res.Status, res.Body)
	}

	tests := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"create for another end user", "POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenB, "end_user_id": "bob"}, 403, "forbidden"},
		{"list another end user", "GET", "/connections?end_user_id=bob", nil, 403, "forbidden"},
		{"get another's", "GET", "/connections/" + other["id"].(string), nil, 404, "not_found"},
		{"get one without end user", "GET", "/connections/" + none["id"].(string), nil, 404, "not_found"},
		{"verify another's", "POST", "/connections/" + other["id"].(string) + "/verify", nil, 404, "not_found"},
		{"delete another's", "DELETE", "/connections/" + other["id"].(string), nil, 404, "not_found"},
		{"credentials of its own", "GET", "/connections/" + own + "/credentials", nil, 403, "forbidden"},
		{"credentials of another's", "GET", "/connections/" + other["id"].(string) + "/credentials", nil, 403, "forbidden"},
		{"open a session", "POST", "/connect/sessions", map[string]any{"end_user_id": "alice"}, 403, "forbidden"},
		{"end a session", "DELETE", "/connect/sessions/cs_x", nil, 403, "forbidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectProblem(t, h.asSession(tok, tc.method, tc.path, tc.body), tc.status, tc.code)
		})
	}
	if got := h.do("GET", "/connections/"+other["id"].(string), nil).json(t); got["status"] != "active" {
		t.Fatalf("another end user's connection changed: %v", got)
	}

	list := h.asSession(tok, "GET", "/connections", nil).json(t)
	if data := list["data"].([]any); len(data) != 1 || data[0].(map[string]any)["id"] != own {
		t.Fatalf("session list = %v, want only its own", list)
	}
	if res := h.asSession(tok, "GET", "/connections?end_user_id=alice", nil); res.Status != 200 {
		t.Fatalf("session list naming itself = %d", res.Status)
	}
	if res := h.asSession(tok, "GET", "/connections/"+own, nil); res.Status != 200 {
		t.Fatalf("session get own = %d", res.Status)
	}
	if res := h.asSession(tok, "POST", "/connections/"+own+"/verify", nil); res.Status != 200 {
		t.Fatalf("session verify own = %d", res.Status)
	}

	info := h.asSession(tok, "GET", "/connect/session", nil)
	in := info.json(t)
	if info.Status != 200 || in["end_user_id"] != "alice" || len(in["connections"].([]any)) != 1 ||
		in["allowed_origins"].([]any)[0] != "https://app.example.com" {
		t.Fatalf("GET /connect/session = %d %s", info.Status, info.Body)
	}
	expectProblem(t, h.do("GET", "/connect/session", nil), 403, "forbidden")

	if res := h.asSession(tok, "DELETE", "/connections/"+own, nil); res.Status != 204 {
		t.Fatalf("session delete own = %d", res.Status)
	}
	if in := h.asSession(tok, "GET", "/connect/session", nil).json(t); len(in["connections"].([]any)) != 0 {
		t.Fatalf("revoked connection still listed for the page: %v", in)
	}
}

func TestSessionExpiryEndAndStorage(t *testing.T) {
	h := newHarness(t)
	id, tok := h.openSession("carol")
	if res := h.asSession(tok, "GET", "/connections", nil); res.Status != 200 {
		t.Fatalf("fresh session = %d", res.Status)
	}
	expectProblem(t, h.asSession("mmcs_"+strings.Repeat("A", 43), "GET", "/connections", nil), 401, "unauthorized")
	expectProblem(t, h.asSession("mmcs_", "GET", "/connect/session", nil), 401, "unauthorized")

	if bytes.Contains(h.dataDirBytes(), []byte(strings.TrimPrefix(tok, "mmcs_"))) {
		t.Fatal("the session token is stored in the data dir")
	}

	h.advance(31 * time.Minute)
	expectProblem(t, h.asSession(tok, "GET", "/connections", nil), 401, "session_expired")
	expectProblem(t, h.asSession(tok, "GET", "/connect/session", nil), 401, "session_expired")
	expectProblem(t, h.asSession(tok, "POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA}), 401, "session_expired")

	// Ending a session makes its token unknown at once.
	id2, tok2 := h.openSession("carol")
	if res := h.do("DELETE", "/connect/sessions/"+id2, nil); res.Status != 204 {
		t.Fatalf("end session = %d", res.Status)
	}
	expectProblem(t, h.asSession(tok2, "GET", "/connect/session", nil), 401, "unauthorized")
	expectProblem(t, h.do("DELETE", "/connect/sessions/"+id2, nil), 404, "not_found")
	_ = id

	for _, body := range []any{map[string]any{}, map[string]any{"end_user_id": ""}, map[string]any{"end_user_id": "a\x00b"}} {
		expectProblem(t, h.do("POST", "/connect/sessions", body), 422, "validation_failed")
	}
}

func TestCORS(t *testing.T) {
	h := newHarness(t)
	pre := func(path, origin string) response {
		return h.doWith("OPTIONS", path, nil, map[string]string{
			"Origin": origin, "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization, content-type, idempotency-key", "Authorization": "",
		})
	}
	res := pre("/connections", "https://app.example.com")
	if res.Status != 204 || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("preflight from an allowed origin = %d %v", res.Status, res.Header)
	}
	allowHeaders := strings.ToLower(res.Header.Get("Access-Control-Allow-Headers"))
	if !strings.Contains(allowHeaders, "authorization") || !strings.Contains(allowHeaders, "content-type") || !strings.Contains(allowHeaders, "idempotency-key") {
		t.Fatalf("Access-Control-Allow-Headers = %q", allowHeaders)
	}
	if res.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatal("credentials allowed")
	}
	if !strings.Contains(strings.Join(res.Header.Values("Vary"), ","), "Origin") {
		t.Fatalf("Vary = %v", res.Header.Values("Vary"))
	}
	if res := pre("/connections", "https://evil.example.com"); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from another origin allowed: %v", res.Header)
	}
	if res := pre("/nope", "https://app.example.com"); res.Status != 404 {
		t.Fatalf("preflight of an unknown path = %d, want 404", res.Status)
	}
	_, tok := h.openSession("dave")
	res = h.doWith("GET", "/connections", nil, map[string]string{"Authorization": "Bearer " + tok, "Origin": "https://app.example.com"})
	if res.Status != 200 || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("CORS GET = %d %v", res.Status, res.Header)
	}
}

func TestConnectPageHeaders(t *testing.T) {
	h := newHarness(t)
	noKey := map[string]string{"Authorization": ""}
	res := h.doWith("GET", "/connect", nil, noKey)
	if res.Status != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /connect = %d %s", res.Status, res.Header.Get("Content-Type"))
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "frame-ancestors https://app.example.com", "script-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	if res.Header.Get("Cross-Origin-Opener-Policy") == "same-origin" {
		t.Error("COOP same-origin would cut the popup off from its opener")
	}
	body := string(res.Body)
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") || strings.Contains(body, "<style") ||
		strings.Contains(body, `src="http`) || strings.Contains(body, `href="http`) {
		t.Error("the page has inline script or style, or an external asset")
	}
	if !strings.Contains(body, `content="https://app.example.com"`) {
		t.Error("the page does not carry its allowed origins for messages before a session is known")
	}
	for file, ct := range map[string]string{"connect.js": "text/javascript", "rules.js": "text/javascript", "connect.css": "text/css", "favicon.svg": "image/svg+xml"} {
		res := h.doWith("GET", "/connect/assets/"+file, nil, noKey)
		if res.Status != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ct) || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("asset %s = %d %v", file, res.Status, res.Header)
		}
	}
	for path, ct := range map[string]string{"/connect/sdk.js": "text/javascript", "/connect/sdk.d.ts": "text/plain"} {
		res := h.doWith("GET", path, nil, map[string]string{"Authorization": "", "Origin": "https://elsewhere.example"})
		if res.Status != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ct) || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(string(res.Body), "openConnect") {
			t.Errorf("%s = %d %v", path, res.Status, res.Header)
		}
	}
	expectProblem(t, h.doWith("GET", "/connect/assets/index.html", nil, noKey), 404, "not_found")
	expectProblem(t, h.doWith("GET", "/connect/assets/..%2fpage.go", nil, noKey), 404, "not_found")
}

package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
)

func TestRoutingBeforeAuth(t *testing.T) {
	h := newHarness(t)
	noKey := map[string]string{"Authorization": ""}
	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		status  int
		code    string
		allow   string
	}{
		{"unknown path without key", "GET", "/nope", noKey, 404, "not_found", ""},
		{"unknown path with key", "GET", "/connections/x/nope", nil, 404, "not_found", ""},
		{"unknown nested without key", "GET", "/connections/x/credentials/y", noKey, 404, "not_found", ""},
		{"wrong method without key", "PUT", "/connections", noKey, 405, "method_not_allowed", "GET"},
		{"wrong method on item", "PATCH", "/connections/abc", nil, 405, "method_not_allowed", "DELETE"},
		{"wrong method on verify", "GET", "/connections/abc/verify", noKey, 405, "method_not_allowed", "POST"},
		{"wrong method on healthz", "POST", "/healthz", noKey, 405, "method_not_allowed", "GET"},
		{"no key", "GET", "/connections", noKey, 401, "unauthorized", ""},
		{"wrong key", "GET", "/connections", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", 40)}, 401, "unauthorized", ""},
		{"basic scheme", "GET", "/connections/abc", map[string]string{"Authorization": "Basic " + h.key}, 401, "unauthorized", ""},
		{"key without scheme", "DELETE", "/connections/abc", map[string]string{"Authorization": h.key}, 401, "unauthorized", ""},
		{"key prefix only", "GET", "/connections", map[string]string{"Authorization": "Bearer " + h.key[:len(h.key)-1]}, 401, "unauthorized", ""},
		{"credentials without key", "GET", "/connections/abc/credentials", noKey, 401, "unauthorized", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var res response
			if tc.headers == nil {
				res = h.do(tc.method, tc.path, nil)
			} else {
				res = h.doWith(tc.method, tc.path, nil, tc.headers)
			}
			expectProblem(t, res, tc.status, tc.code)
			if tc.allow != "" && !strings.Contains(res.Header.Get("Allow"), tc.allow) {
				t.Fatalf("Allow = %q, want it to list %s", res.Header.Get("Allow"), tc.allow)
			}
			if tc.status == 401 && res.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	// Lower-case scheme is accepted, as RFC 9110 makes schemes case-insensitive.
	res := h.doWith("GET", "/connections", nil, map[string]string{"Authorization": "bearer " + h.key})
	if res.Status != 200 {
		t.Fatalf("lower-case bearer: %d", res.Status)
	}
}

func TestOpenEndpoints(t *testing.T) {
	h := newHarness(t)
	noKey := map[string]string{"Authorization": ""}
	for _, path := range []string{"/healthz", "/readyz", "/openapi.yaml"} {
		res := h.doWith("GET", path, nil, noKey)
		if res.Status != 200 {
			t.Errorf("GET %s = %d, want 200", path, res.Status)
		}
	}
	res := h.doWith("GET", "/openapi.yaml", nil, noKey)
	if !bytes.HasPrefix(res.Body, []byte("openapi: 3")) {
		t.Fatalf("/openapi.yaml does not serve the contract: %.40s", res.Body)
	}
}

func TestRequestIDPassedThroughOrMinted(t *testing.T) {
	h := newHarness(t)
	res := h.doWith("GET", "/healthz", nil, map[string]string{"X-Request-Id": "lb-abc.123"})
	if got := res.Header.Get("X-Request-Id"); got != "lb-abc.123" {
		t.Fatalf("X-Request-Id = %q, want the load balancer's", got)
	}
	res = h.doWith("GET", "/healthz", nil, map[string]string{"X-Request-Id": "bad id\x01<script>"})
	if got := res.Header.Get("X-Request-Id"); got == "" || strings.ContainsAny(got, " <") {
		t.Fatalf("X-Request-Id = %q, want a fresh id", got)
	}
}

func TestCreateConnection(t *testing.T) {
	h := newHarness(t)
	res := h.do("POST", "/connections", map[string]any{
		"server_url": "  " + strings.ToUpper(h.mm.URL) + "/api/v4/ ", "token": " " + tokenA + "\n", "end_user_id": "user-1",
	})
	if res.Status != http.StatusCreated {
		t.Fatalf("status = %d, want 201: %s", res.Status, res.Body)
	}
	c := res.json(t)
	if loc := res.Header.Get("Location"); loc != "/connections/"+c["id"].(string) {
		t.Fatalf("Location = %q, want /connections/%s", loc, c["id"])
	}
	want := map[string]any{
		"provider": "mattermost", "server_url": h.mm.URL, "end_user_id": "user-1", "status": "active",
		"server_version": "11.4.0", "token_hint": tokenA[22:], "revoked_at": nil, "last_error": nil,
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("%s = %v, want %v", k, c[k], v)
		}
	}
	u := c["mattermost_user"].(map[string]any)
	if u["id"] != userA || u["username"] != "alice" || u["email"] != "alice@example.com" {
		t.Errorf("mattermost_user = %v", u)
	}
	if c["created_at"] != c["last_verified_at"] || c["created_at"] != c["updated_at"] {
		t.Errorf("times differ on creation: %v", c)
	}
	if bytes.Contains(res.Body, []byte(tokenA)) {
		t.Fatal("the response contains the token")
	}

	got := h.do("GET", "/connections/"+c["id"].(string), nil)
	if got.Status != 200 || !bytes.Equal(got.Body, res.Body) {
		t.Fatalf("GET after create = %d %s, want the created body", got.Status, got.Body)
	}
	if bytes.Contains(h.dataDirBytes(), []byte(tokenA)) {
		t.Fatal("the token is stored unencrypted in the data dir")
	}
}

func TestReconnect(t *testing.T) {
	h := newHarness(t)
	first := h.connect(tokenA, nil)

	// The same account with a new token replaces the token: 200, same id.
	res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL + "/", "token": tokenA2})
	if res.Status != http.StatusOK {
		t.Fatalf("reconnect status = %d, want 200: %s", res.Status, res.Body)
	}
	again := res.json(t)
	if again["id"] != first["id"] || res.Header.Get("Location") != "/connections/"+first["id"].(string) {
		t.Fatalf("reconnect id = %v (Location %q), want %v", again["id"], res.Header.Get("Location"), first["id"])
	}
	if again["token_hint"] != tokenA2[22:] || again["created_at"] != first["created_at"] || again["updated_at"] == first["updated_at"] {
		t.Fatalf("reconnect did not replace the token: %v", again)
	}
	cred := h.do("GET", "/connections/"+first["id"].(string)+"/credentials", nil).json(t)
	if cred["token"] != tokenA2 {
		t.Fatalf("credentials after reconnect hold the old token")
	}

	// Another end user or another Mattermost account is another connection.
	if other := h.connect(tokenA, strp("eu-1")); other["id"] == first["id"] {
		t.Fatal("an end user's connection reused the connection without end user")
	}
	if other := h.connect(tokenB, nil); other["id"] == first["id"] {
		t.Fatal("another Mattermost account reused the connection")
	}

	// A revoked connection is not revived: connecting again makes a new one.
	h.do("DELETE", "/connections/"+first["id"].(string), nil)
	res = h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA})
	if res.Status != http.StatusCreated || res.json(t)["id"] == first["id"] {
		t.Fatalf("connect after revoke = %d %s, want 201 with a new id", res.Status, res.Body)
	}
}

func TestReconnectWhileInvalid(t *testing.T) {
	h := newHarness(t)
	first := h.connect(tokenA, nil)
	id := first["id"].(string)
	h.mm.RevokeToken(tokenA)
	if v := h.do("POST", "/connections/"+id+"/verify", nil).json(t); v["status"] != "invalid" {
		t.Fatalf("status after upstream revoke = %v", v["status"])
	}
	res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA2})
	c := res.json(t)
	if res.Status != 200 || c["id"] != id || c["status"] != "active" || c["last_error"] != nil {
		t.Fatalf("reconnect of an invalid connection = %d %v; want 200, same id, active, no last_error", res.Status, c)
	}
}

func TestConcurrentIdenticalConnectsLeaveOne(t *testing.T) {
	h := newHarness(t)
	const n = 6
	var wg sync.WaitGroup
	statuses := make([]int, n)
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA, "end_user_id": "racer"})
			statuses[i] = res.Status
			if res.Status < 300 {
				ids[i] = res.json(t)["id"].(string)
			}
		}()
	}
	wg.Wait()
	created := 0
	for i := range n {
		if statuses[i] == 201 {
			created++
		} else if statuses[i] != 200 {
			t.Fatalf("request %d: status %d", i, statuses[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("ids differ: %v", ids)
		}
	}
	if created != 1 {
		t.Fatalf("%d requests created a connection, want 1 (statuses %v)", created, statuses)
	}
	list := h.do("GET", "/connections?end_user_id=racer", nil).json(t)
	if got := len(list["data"].([]any)); got != 1 {
		t.Fatalf("%d connections for the end user, want 1", got)
	}
}

func TestCreateRejectsBadRequests(t *testing.T) {
	h := newHarness(t)
	valid := func(m map[string]any) map[string]any {
		out := map[string]any{"server_url": h.mm.URL, "token": tokenA}
		for k, v := range m {
			if v == nil {
				delete(out, k)
			} else {
				out[k] = v
			}
		}
		return out
	}
	tests := []struct {
		name        string
		body        any
		contentType string
		status      int
		code        string
		field       string
		fieldCode   string
		detail      string
	}{
		{name: "malformed JSON", body: `{"server_url":`, status: 400, code: "invalid_request", detail: "ends in the middle"},
		{name: "not JSON", body: `server_url=x`, status: 400, code: "invalid_request", detail: "not valid JSON"},
		{name: "empty body", body: ``, status: 400, code: "invalid_request", detail: "empty"},
		{name: "array body", body: `[]`, status: 400, code: "invalid_request", detail: "JSON object"},
		{name: "wrong type", body: `{"server_url": 5, "token": "x"}`, status: 400, code: "invalid_request", detail: "server_url must be a string"},
		{name: "wrong type end user", body: `{"server_url": "a.b", "token": "x", "end_user_id": 7}`, status: 400, code: "invalid_request", detail: "end_user_id"},
		{name: "unknown field", body: `{"server_url": "a.b", "token": "x", "extra": 1}`, status: 400, code: "invalid_request", detail: `extra`},
		{name: "trailing data", body: `{"server_url": "a.b", "token": "x"} {}`, status: 400, code: "invalid_request", detail: "more after it"},
		{name: "too large", body: `{"server_url": "` + strings.Repeat("a", 70<<10) + `"}`, status: 413, code: "payload_too_large"},
		{name: "form content type", body: `{}`, contentType: "application/x-www-form-urlencoded", status: 415, code: "unsupported_media_type"},
		{name: "no content type", body: `{}`, contentType: "-", status: 415, code: "unsupported_media_type"},
		{name: "missing server_url", body: valid(map[string]any{"server_url": nil}), status: 422, code: "validation_failed", field: "server_url", fieldCode: "required"},
		{name: "missing token", body: valid(map[string]any{"token": nil}), status: 422, code: "validation_failed", field: "token", fieldCode: "required"},
		{name: "blank token", body: valid(map[string]any{"token": "   "}), status: 422, code: "validation_failed", field: "token", fieldCode: "required"},
		{name: "short token", body: valid(map[string]any{"token": tokenA[:20]}), status: 422, code: "validation_failed", field: "token", fieldCode: "invalid_format", detail: "20 characters"},
		{name: "bearer token", body: valid(map[string]any{"token": "Bearer " + tokenA}), status: 422, code: "validation_failed", field: "token", fieldCode: "invalid_format", detail: "Bearer"},
		{name: "upper-case token", body: valid(map[string]any{"token": strings.ToUpper(tokenA)}), status: 422, code: "validation_failed", field: "token", fieldCode: "invalid_format", detail: "upper-case"},
		{name: "token too long", body: valid(map[string]any{"token": strings.Repeat("a", 2000)}), status: 422, code: "validation_failed", field: "token", fieldCode: "too_long"},
		{name: "server url with query", body: valid(map[string]any{"server_url": h.mm.URL + "/?x=1"}), status: 422, code: "validation_failed", field: "server_url", fieldCode: "invalid_format", detail: "query"},
		{name: "http server url", body: valid(map[string]any{"server_url": "http://mm.example.com"}), status: 422, code: "validation_failed", field: "server_url", fieldCode: "invalid_format", detail: "https://"},
		{name: "server url too long", body: valid(map[string]any{"server_url": strings.Repeat("a", 3000)}), status: 422, code: "validation_failed", field: "server_url", fieldCode: "too_long"},
		{name: "server url too long written in full", body: valid(map[string]any{"server_url": "a.b/" + strings.Repeat("c", 2040)}), status: 422, code: "validation_failed", field: "server_url", fieldCode: "too_long", detail: "written in full"},
		{name: "empty end user", body: valid(map[string]any{"end_user_id": ""}), status: 422, code: "validation_failed", field: "end_user_id", fieldCode: "required"},
		{name: "long end user", body: valid(map[string]any{"end_user_id": strings.Repeat("é", 256)}), status: 422, code: "validation_failed", field: "end_user_id", fieldCode: "too_long"},
		{name: "control char end user", body: valid(map[string]any{"end_user_id": "a\tb"}), status: 422, code: "validation_failed", field: "end_user_id", fieldCode: "invalid_format"},
		// Strict JSON, as the README promises.
		{name: "null body", body: `null`, status: 400, code: "invalid_request", detail: "not null"},
		{name: "duplicate key", body: `{"server_url": "a.b", "token": "x", "token": "y"}`, status: 400, code: "invalid_request", detail: "token is given more than once"},
		{name: "field name in another case", body: `{"Server_URL": "a.b", "token": "x"}`, status: 400, code: "invalid_request", detail: "Server_URL"},
		{name: "raw bytes that are not UTF-8", body: "{\"server_url\": \"a.b\", \"token\": \"x\", \"end_user_id\": \"victim\xff\"}", status: 400, code: "invalid_request", detail: "UTF-8"},
		{name: "escaped lone high surrogate", body: `{"server_url": "a.b", "token": "x", "end_user_id": "victim\ud800"}`, status: 422, code: "validation_failed", field: "end_user_id", fieldCode: "invalid_format"},
		{name: "escaped lone low surrogate", body: `{"server_url": "a.b", "token": "x", "end_user_id": "victim\udfff"}`, status: 422, code: "validation_failed", field: "end_user_id", fieldCode: "invalid_format"},
		// A lone surrogate outside the request's fields names no field.
		{name: "lone surrogate in a bare string", body: `"\ud800"`, status: 400, code: "invalid_request", detail: "surrogate"},
		{name: "lone surrogate in a cut-off string", body: `"\ud8000`, status: 400, code: "invalid_request"},
		{name: "lone surrogate in an unknown field", body: `{"server_url": "a.b", "token": "x", "extra": "\ud800"}`, status: 400, code: "invalid_request"},
		{name: "lone surrogate nested in a field", body: `{"server_url": {"a": "\ud800"}, "token": "x"}`, status: 400, code: "invalid_request"},
		{name: "lone surrogate in a member name", body: `{"\ud800": 1}`, status: 400, code: "invalid_request"},
		{name: "bidi override end user", body: valid(map[string]any{"end_user_id": "alice\u202egnp.exe"}), status: 422, code: "validation_failed", field: "end_user_id", fieldCode: "invalid_format"},
		{name: "zero-width end user", body: valid(map[string]any{"end_user_id": "ali\u200bce"}), status: 422, code: "validation_failed", field: "end_user_id", fieldCode: "invalid_format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.mm.Requests()
			headers := map[string]string{"Authorization": "Bearer " + h.key}
			switch tc.contentType {
			case "":
			case "-":
				headers["Content-Type"] = ""
			default:
				headers["Content-Type"] = tc.contentType
			}
			res := h.doWith("POST", "/connections", tc.body, headers)
			p := expectProblem(t, res, tc.status, tc.code)
			if tc.detail != "" && !strings.Contains(string(res.Body), tc.detail) {
				t.Errorf("problem does not say %q: %s", tc.detail, res.Body)
			}
			if tc.field != "" {
				errs, _ := p["errors"].([]any)
				if len(errs) != 1 {
					t.Fatalf("errors = %v, want one for %s", p["errors"], tc.field)
				}
				fe := errs[0].(map[string]any)
				if fe["field"] != tc.field || fe["code"] != tc.fieldCode || fe["message"] == "" {
					t.Errorf("field problem = %v, want %s/%s", fe, tc.field, tc.fieldCode)
				}
			}
			if h.mm.Requests() != before {
				t.Error("a malformed request reached Mattermost")
			}
			if strings.Contains(string(res.Body), tokenA) {
				t.Error("the problem repeats the token")
			}
		})
	}
	if list := h.do("GET", "/connections", nil).json(t); len(list["data"].([]any)) != 0 {
		t.Fatal("a rejected request stored a connection")
	}
}

// Every field problem is reported at once, one message per rule: a missing
// token and a blank one are the same problem.
func TestEveryFieldProblemAtOnce(t *testing.T) {
	h := newHarness(t)
	p := expectProblem(t, h.do("POST", "/connections", `{"server_url":"ftp://x","token":"Bearer x","end_user_id":""}`), 422, "validation_failed")
	fields := map[string]bool{}
	for _, e := range p["errors"].([]any) {
		fields[e.(map[string]any)["field"].(string)] = true
	}
	if len(fields) != 3 || !fields["server_url"] || !fields["token"] || !fields["end_user_id"] {
		t.Fatalf("errors = %v; want server_url, token and end_user_id at once", p["errors"])
	}
	missing := expectProblem(t, h.do("POST", "/connections", `{"server_url":"a.example.com"}`), 422, "validation_failed")
	blank := expectProblem(t, h.do("POST", "/connections", `{"server_url":"a.example.com","token":" "}`), 422, "validation_failed")
	if m, b := missing["errors"].([]any)[0], blank["errors"].([]any)[0]; fmt.Sprint(m) != fmt.Sprint(b) {
		t.Fatalf("a missing token says %v, a blank one %v; want one message", m, b)
	}
	// The session body follows the same rule for end_user_id.
	for _, body := range []string{`{}`, `{"end_user_id":""}`, `{"end_user_id":"a\u200bb"}`, `{"end_user_id":null}`} {
		expectProblem(t, h.do("POST", "/connect/sessions", body), 422, "validation_failed")
	}
	// The list filter refuses what no end user id can be.
	for _, q := range []string{"ali%E2%80%8Bce", strings.Repeat("a", 256)} {
		expectProblem(t, h.do("GET", "/connections?end_user_id="+q, nil), 422, "validation_failed")
	}
}

func TestCreateUpstreamFailures(t *testing.T) {
	h := newHarness(t)
	res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": unknownT})
	p := expectProblem(t, res, 422, "token_rejected")
	for _, hint := range []string{"Token ID", "revoked", "System Admin", h.mm.URL[len("https://"):]} {
		if !strings.Contains(p["detail"].(string), hint) {
			t.Errorf("token_rejected detail does not mention %q: %s", hint, p["detail"])
		}
	}
	if strings.Contains(string(res.Body), unknownT) {
		t.Fatal("problem contains the token")
	}

	h.mm.Override(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Version-Id", "11.4.0.dev.x.false")
		w.WriteHeader(503)
	})
	expectProblem(t, h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA}), 502, "upstream_error")

	h.mm.Override(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
	})
	res = h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA})
	expectProblem(t, res, 429, "upstream_rate_limited")
	if res.Header.Get("Retry-After") != "30" {
		t.Fatalf("Retry-After = %q, want 30 passed on", res.Header.Get("Retry-After"))
	}
	if list := h.do("GET", "/connections", nil).json(t); len(list["data"].([]any)) != 0 {
		t.Fatal("a failed check stored a connection")
	}
}

func TestGetListAndPaging(t *testing.T) {
	h := newHarness(t)
	expectProblem(t, h.do("GET", "/connections/conn_unknown", nil), 404, "not_found")

	var ids []string
	for i := range 5 {
		end := "a"
		if i%2 == 1 {
			end = "b"
		}
		token := []string{tokenA, tokenB}[i%2]
		c := h.connect(token, strp(end+string(rune('0'+i))))
		ids = append([]string{c["id"].(string)}, ids...) // newest first
	}
	var paged []string
	cursor := ""
	for range 10 {
		path := "/connections?limit=2"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		page := h.do("GET", path, nil).json(t)
		for _, c := range page["data"].([]any) {
			paged = append(paged, c.(map[string]any)["id"].(string))
		}
		next, _ := page["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if strings.Join(paged, ",") != strings.Join(ids, ",") {
		t.Fatalf("paged = %v, want newest first %v", paged, ids)
	}
	// A page that holds exactly what is left is the last: no cursor to an
	// empty page.
	if full := h.do("GET", "/connections?limit=5", nil).json(t); len(full["data"].([]any)) != 5 || full["next_cursor"] != nil {
		t.Fatalf("limit=5 over 5 connections = %d, next_cursor %v", len(full["data"].([]any)), full["next_cursor"])
	}

	one := h.do("GET", "/connections?end_user_id=b1", nil).json(t)
	if data := one["data"].([]any); len(data) != 1 || data[0].(map[string]any)["end_user_id"] != "b1" {
		t.Fatalf("filter end_user_id=b1 = %v", one)
	}
	h.do("DELETE", "/connections/"+ids[0], nil)
	rev := h.do("GET", "/connections?status=revoked", nil).json(t)
	if data := rev["data"].([]any); len(data) != 1 || data[0].(map[string]any)["id"] != ids[0] {
		t.Fatalf("filter status=revoked = %v", rev)
	}
	if all := h.do("GET", "/connections?status=active&limit=200", nil).json(t); len(all["data"].([]any)) != 4 || all["next_cursor"] != nil {
		t.Fatalf("status=active = %v", all)
	}

	for _, q := range []string{
		"limit=0", "limit=201", "limit=x", "limit=", "status=gone", "status=", "end_user_id=",
		"cursor=", "cursor=%%%", "cursor=bm90LWEtY3Vyc29y", "foo=bar", "limit=1&limit=2",
	} {
		expectProblem(t, h.do("GET", "/connections?"+q, nil), 400, "invalid_request")
	}
}

func TestVerify(t *testing.T) {
	h := newHarness(t)
	c := h.connect(tokenA, nil)
	id := c["id"].(string)

	v := h.do("POST", "/connections/"+id+"/verify", nil)
	if v.Status != 200 || v.json(t)["status"] != "active" || v.json(t)["last_verified_at"] == c["last_verified_at"] {
		t.Fatalf("verify of a good token = %d %s", v.Status, v.Body)
	}

	// Server trouble keeps the status and records the error.
	h.mm.Override(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	got := h.do("POST", "/connections/"+id+"/verify", nil).json(t)
	le, _ := got["last_error"].(map[string]any)
	if got["status"] != "active" || le == nil || le["code"] != "upstream_error" {
		t.Fatalf("verify against a failing server = %v", got)
	}

	// Mattermost rejecting the token makes the connection invalid.
	h.mm.Override(nil)
	h.mm.RevokeToken(tokenA)
	got = h.do("POST", "/connections/"+id+"/verify", nil).json(t)
	le, _ = got["last_error"].(map[string]any)
	if got["status"] != "invalid" || le == nil || le["code"] != "token_rejected" {
		t.Fatalf("verify of a revoked token = %v", got)
	}

	// Accepted again (e.g. tokens re-enabled): active, error cleared.
	h.mm.AddToken(tokenA, mattermosttestUserA())
	got = h.do("POST", "/connections/"+id+"/verify", nil).json(t)
	if got["status"] != "active" || got["last_error"] != nil {
		t.Fatalf("verify after recovery = %v", got)
	}

	expectProblem(t, h.do("POST", "/connections/conn_unknown/verify", nil), 404, "not_found")
	h.do("DELETE", "/connections/"+id, nil)
	expectProblem(t, h.do("POST", "/connections/"+id+"/verify", nil), 409, "connection_revoked")
}

func TestCredentialsAndRevoke(t *testing.T) {
	h := newHarness(t)
	c := h.connect(tokenA, strp("u1"))
	id := c["id"].(string)

	res := h.do("GET", "/connections/"+id+"/credentials", nil)
	cred := res.json(t)
	if res.Status != 200 || cred["token"] != tokenA || cred["server_url"] != h.mm.URL {
		t.Fatalf("credentials = %d %s", res.Status, res.Body)
	}
	if res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store", res.Header.Get("Cache-Control"))
	}
	expectProblem(t, h.do("GET", "/connections/conn_unknown/credentials", nil), 404, "not_found")

	del := h.do("DELETE", "/connections/"+id, nil)
	if del.Status != 204 || len(del.Body) != 0 {
		t.Fatalf("DELETE = %d %q, want 204 and no body", del.Status, del.Body)
	}
	after := h.do("GET", "/connections/"+id, nil).json(t)
	if after["status"] != "revoked" || after["revoked_at"] == nil || after["token_hint"] != tokenA[22:] {
		t.Fatalf("after revoke = %v", after)
	}
	if again := h.do("DELETE", "/connections/"+id, nil); again.Status != 204 {
		t.Fatalf("second DELETE = %d, want 204", again.Status)
	}
	if again := h.do("GET", "/connections/"+id, nil).json(t); again["revoked_at"] != after["revoked_at"] || again["updated_at"] != after["updated_at"] {
		t.Fatalf("second DELETE changed the record: %v vs %v", again, after)
	}
	expectProblem(t, h.do("GET", "/connections/"+id+"/credentials", nil), 409, "connection_revoked")
	expectProblem(t, h.do("DELETE", "/connections/conn_unknown", nil), 404, "not_found")
	if bytes.Contains(h.dataDirBytes(), []byte(tokenA)) {
		t.Fatal("the token is in the data dir")
	}
}

// The upstream check's outcomes reach the client with their status and
// code, and POST /verify records them in last_error.
// The codes a check can fail with are one list (connection.CheckCodes),
// which metrics name before the first check: the contract's UpstreamCode
// is that list in its order, and each is one of the contract's problem
// codes (TestUpstreamStatusForEachCheckCode holds the error table to it).
func TestCheckCodesAreTheContracts(t *testing.T) {
	doc, err := contract()
	if err != nil {
		t.Fatal(err)
	}
	var enum []string
	for _, v := range doc.Components.Schemas["UpstreamCode"].Value.Enum {
		enum = append(enum, v.(string))
	}
	codes := connection.CheckCodes()
	if !slices.Equal(enum, codes) {
		t.Errorf("openapi.yaml's UpstreamCode = %v; connection.CheckCodes = %v", enum, codes)
	}
	problems := doc.Components.Schemas["Problem"].Value.Properties["code"].Value.Enum
	for _, c := range codes {
		if !slices.Contains(problems, any(c)) {
			t.Errorf("%s is not a problem code in openapi.yaml", c)
		}
	}
}

func TestUpstreamOutcomesThroughTheAPI(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		url    string
		status int
		code   string
	}{
		{"https://169.254.169.254", 422, "host_not_allowed"},
		{"https://10.0.0.1:8065", 422, "host_not_allowed"},
		{"[::1]", 422, "host_not_allowed"},
		{"0x7f.1", 422, "validation_failed"},
	} {
		before := h.mm.Requests()
		expectProblem(t, h.do("POST", "/connections", map[string]any{"server_url": tc.url, "token": tokenA}), tc.status, tc.code)
		if h.mm.Requests() != before {
			t.Errorf("%s reached an upstream", tc.url)
		}
	}

	// A server under a subpath: the user types the host, the connection
	// stores where the API answered.
	h.mm.ServeUnder("/mattermost")
	res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenA})
	c := res.json(t)
	if res.Status != 201 || c["server_url"] != h.mm.URL+"/mattermost" {
		t.Fatalf("subpath connect = %d %v, want server_url %s/mattermost", res.Status, c["server_url"], h.mm.URL)
	}
	id := c["id"].(string)
	// Typing the subpath reaches the same connection.
	res = h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL + "/mattermost/", "token": tokenA})
	if res.Status != 200 || res.json(t)["id"] != id {
		t.Fatalf("subpath reconnect = %d %s", res.Status, res.Body)
	}
	if cred := h.do("GET", "/connections/"+id+"/credentials", nil).json(t); cred["server_url"] != h.mm.URL+"/mattermost" {
		t.Fatalf("credentials server_url = %v", cred["server_url"])
	}

	// A server that stops answering in time: 504 on connect, recorded on verify.
	h.mm.Override(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	expectProblem(t, h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL, "token": tokenB}), 504, "upstream_timeout")
	v := h.do("POST", "/connections/"+id+"/verify", nil).json(t)
	le, _ := v["last_error"].(map[string]any)
	if v["status"] != "active" || le == nil || le["code"] != "upstream_timeout" || !strings.Contains(le["message"].(string), "127.0.0.1") {
		t.Fatalf("verify against a silent server = %v", v)
	}
}

package api_test

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzDo sends one fuzzed request (body nil for none) with the API key,
// the harness reporting through t, this input's test, and fails on an
// internal error; a target no request line can carry is skipped.
func fuzzDo(t *testing.T, h *harness, method, target string, body any) response {
	if strings.ContainsAny(target, " \t\r\n#") || !utf8.ValidString(target) {
		t.Skip("not a request line's target")
	}
	if _, err := url.ParseRequestURI(target); err != nil {
		t.Skip("not a request target")
	}
	h.t = t
	res := h.doWith(method, target, body, map[string]string{"Authorization": "Bearer " + h.key})
	if res.Status == http.StatusInternalServerError {
		t.Fatalf("internal error for %s %s (body %q): %s", method, target, body, res.Body)
	}
	return res
}

// FuzzRequestBody: whatever body a client posts to a route that reads one
// (POST /connections, POST /connect/sessions), the answer is one
// openapi.yaml allows (the harness checks every answer against it), never
// an internal error, and a refusal is problem+json with a code. Bodies
// that pass validation reach the fake Mattermost or a closed port, or open
// a session, whose answers are the contract's too.
func FuzzRequestBody(f *testing.F) {
	h := newHarnessWith(f, harnessOptions{publicURL: "https://connect.example.com", noWebhooks: true})
	for _, body := range []string{
		`{"server_url": "` + h.mm.URL + `", "token": "` + tokenA + `", "end_user_id": "u1"}`,
		`{"server_url": "mm.example.com", "token": "abc"}`,
		`{"server_url": "https://[::1]:8065/a/api/v4", "token": "` + tokenB + `", "end_user_id": null}`,
		`{"server_url": 5}`, `[]`, `null`, `{"token": "x", "token": "y"}`, `{"end_user_id": "a\u202eb"}`,
		"{\"server_url\": \"a\xff\"}", `{"server_url": "a.b", "token": "x"} {}`,
		`{"end_user_id": "u1"}`, `{"end_user_id": ""}`, `{"end_user_id": "u1", "x": 1}`, `{"end_user_id": "` + strings.Repeat("u", 300) + `"}`,
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range []string{"/connections", "/connect/sessions"} {
			if res := fuzzDo(t, h, "POST", path, body); res.Status >= 400 {
				if p := res.json(t); p["code"] == nil || res.Header.Get("Content-Type") != "application/problem+json" {
					t.Fatalf("POST %s: refusal %d without a problem's code for %q: %s", path, res.Status, body, res.Body)
				}
			}
		}
	})
}

// FuzzListQuery: whatever query a client puts on GET /connections (and on
// the webhook deliveries and audit listings, which read theirs the same
// way), the answer is one openapi.yaml allows, never an internal error:
// a page, or a problem naming what is wrong (400 for the query, 422 for a
// filter's value). Cursors are opaque to
// clients, so forged and truncated ones are the interesting inputs.
func FuzzListQuery(f *testing.F) {
	h := newHarnessWith(f, harnessOptions{publicURL: "https://connect.example.com"})
	for i := range 3 {
		h.connect(tokenA, strp("fuzz-"+strconv.Itoa(i)))
	}
	cursor := h.do("GET", "/connections?limit=1", nil).json(f)["next_cursor"].(string)
	for _, q := range []string{"limit=1", "limit=1&cursor=" + cursor, "cursor=" + cursor[:len(cursor)/2], "status=active&end_user_id=fuzz-1",
		"limit=0", "limit=-1", "limit=1e3", "status=nope", "cursor=", "limit=2&limit=3", "x=1", "end_user_id=%ff", "cursor=%00"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		for _, path := range []string{"/connections", "/webhooks/deliveries", "/audit-events"} {
			target := path + "?" + query
			res := fuzzDo(t, h, "GET", target, nil)
			if res.Status != http.StatusOK && res.Status != http.StatusBadRequest && res.Status != http.StatusUnprocessableEntity {
				t.Fatalf("%s answered %d: %s", target, res.Status, res.Body)
			}
		}
	})
}

// credentialsPath is what the proxy must never forward (without
// MMCONNECT_PROXY_ALLOW_TOKEN_PATHS): the paths that mint, list or reveal
// tokens and sessions, read as a server would after merging slashes.
var credentialsPath = regexp.MustCompile(`^/api/v4/users/((login|tokens|sessions)|[^/]*/(tokens|sessions))`)

var slashes = regexp.MustCompile(`/+`)

// FuzzProxyPath: whatever path a client puts after /proxy/, and with
// whatever method, a request that reaches Mattermost is under /api/v4/,
// with no dot segments, and is not a credentials path even to a server
// that merges slashes; everything else is refused within the contract,
// never an internal error.
func FuzzProxyPath(f *testing.F) {
	h := newHarnessWith(f, harnessOptions{publicURL: "https://connect.example.com", noWebhooks: true})
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	seen := recordUpstream(h, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, p := range []string{"api/v4/users/me", "api/v4/users/me/tokens", "api/v4/users/me//tokens", "api/v4/users/%74okens",
		"api/v4/../v4/users/login", "api/v4/users/me%2ftokens", "api/v4/channels/x/posts?page=1", "api/v4/users/login/switch", "api/v4/"} {
		f.Add(p, uint8(0))
	}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH"}
	f.Fuzz(func(t *testing.T, p string, method uint8) {
		target := "/connections/" + id + "/proxy/" + p
		before := len(seen())
		fuzzDo(t, h, methods[int(method)%len(methods)], target, nil)
		for _, up := range seen()[before:] {
			segs := strings.Split(up.Path, "/")
			if !strings.HasPrefix(up.Path, "/api/v4/") || credentialsPath.MatchString(slashes.ReplaceAllString(up.Path, "/")) ||
				slices.Contains(segs, "..") || slices.Contains(segs, ".") {
				t.Fatalf("%s reached Mattermost as %s", target, up.Path)
			}
		}
	})
}

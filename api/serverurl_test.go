package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
)

// What people paste is the address bar while they use Mattermost: the
// site root is found (the token goes only to the path that answered as the
// API) and stored as server_url.
func TestPastedAddressesFindTheSiteRoot(t *testing.T) {
	for _, tc := range []struct {
		subpath string
		pasted  string
	}{
		{"", "/myteam/channels/town-square"},
		{"", "/myteam/messages/@bob"},
		{"", "/myteam/pl/q1w2e3r4t5y6u7i8o9p0asdfgh"},
		{"", "/login"},
		{"", "/admin_console/user_management/users"},
		{"", "/myteam/channels/town-square/"},
		{"/mattermost", "/mattermost/myteam/channels/off-topic"},
		{"/mattermost", "/mattermost/login"},
		{"/mattermost", "/mattermost"},
		{"/mattermost", ""},
	} {
		t.Run(tc.subpath+tc.pasted, func(t *testing.T) {
			h := newHarness(t)
			if tc.subpath != "" {
				h.mm.ServeUnder(tc.subpath)
			}
			res := h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL + tc.pasted, "token": tokenA})
			if res.Status != 201 {
				t.Fatalf("connect with %s = %d %s", tc.pasted, res.Status, res.Body)
			}
			if got, want := res.json(t)["server_url"], h.mm.URL+tc.subpath; got != want {
				t.Fatalf("server_url = %v, want the site root %s", got, want)
			}
			if n := h.mm.TokenSentOutsideAPI(); n != 0 {
				t.Fatalf("the token was sent to %d paths that are not the API", n)
			}
		})
	}
}

// A host that is not Mattermost at all still ends not_mattermost, after at
// most five probes, without the token.
func TestPastedAddressOfSomethingElse(t *testing.T) {
	h := newHarness(t)
	var requests, withToken atomic.Int64
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("Authorization") != "" {
			withToken.Add(1)
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<!doctype html><title>Intranet</title>")
	}))
	defer other.Close()
	h.mm.Override(other.Config.Handler.ServeHTTP)
	p := expectProblem(t, h.do("POST", "/connections", map[string]any{"server_url": h.mm.URL + "/a/b/c/d/e/f", "token": tokenA}), 422, "not_mattermost")
	if requests.Load() > 5 || withToken.Load() != 0 {
		t.Fatalf("%d probes, %d with the token; want at most 5 and none", requests.Load(), withToken.Load())
	}
	if !strings.Contains(p["detail"].(string), "address in your browser") {
		t.Fatalf("detail = %v", p["detail"])
	}
}

// A bot's token connects and says so.
func TestBotConnection(t *testing.T) {
	h := newHarness(t)
	h.mm.AddToken(unknownT, mattermosttest.User{ID: "1db9ackk8t8t8f14ai8pes6n3w", Username: "deploy-bot", Email: "deploy-bot@localhost", IsBot: true})
	c := h.connect(unknownT, strp("u1"))
	if u := c["mattermost_user"].(map[string]any); u["is_bot"] != true || u["username"] != "deploy-bot" {
		t.Fatalf("mattermost_user = %v", u)
	}
	if u := h.connect(tokenA, strp("u2"))["mattermost_user"].(map[string]any); u["is_bot"] != false {
		t.Fatalf("a person's mattermost_user = %v", u)
	}
}

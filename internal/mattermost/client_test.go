package mattermost_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/mattermost"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
)

const (
	validToken = "abcdefghijkmnopqrstuvwxyza"
	otherToken = "zyxwvutsrqponmkjihgfedcbay"
	aliceID    = "b95oboh88frobdioocwwdoqhdc"
)

func newClient(t *testing.T, mm *mattermosttest.Server, timeout time.Duration) *mattermost.Client {
	t.Helper()
	pool, err := mattermost.LoadRootCAs(mm.CAFile(t))
	if err != nil {
		t.Fatal(err)
	}
	return mattermost.New(mattermost.Options{Timeout: timeout, RootCAs: pool})
}

func upstreamCode(t *testing.T, err error) string {
	t.Helper()
	var ue *connection.UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v (%T), want *connection.UpstreamError", err, err)
	}
	if strings.Contains(ue.Error(), validToken) || strings.Contains(ue.Error(), otherToken) {
		t.Fatalf("error carries the token: %v", ue)
	}
	return ue.Code
}

func TestVerifyAcceptsValidToken(t *testing.T) {
	mm := mattermosttest.NewServer(t)
	mm.AddToken(validToken, mattermosttest.User{ID: aliceID, Username: "alice", Email: "alice@example.com"})
	c := newClient(t, mm, 5*time.Second)
	ident, err := c.Verify(context.Background(), mm.URL, validToken)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := connection.Identity{ServerURL: mm.URL, ServerVersion: "11.4.0",
		User: connection.MattermostUser{ID: aliceID, Username: "alice", Email: "alice@example.com"}}
	if ident != want {
		t.Fatalf("Verify = %+v, want %+v", ident, want)
	}
}

func TestVerifyFailures(t *testing.T) {
	replay := func(name string) http.HandlerFunc {
		c := mattermosttest.LoadCapture(name)
		return func(w http.ResponseWriter, r *http.Request) { c.Write(w) }
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"unknown token", nil, connection.CodeTokenRejected},
		{"revoked token capture", replay("15-users-me-revoked-token"), connection.CodeTokenRejected},
		{"deactivated user capture", replay("19-users-me-deactivated-user"), connection.CodeTokenRejected},
		{"tokens disabled capture", replay("17b-users-me-pats-disabled-fresh-token"), connection.CodeTokenRejected},
		{"rate limited capture", replay("24b-ratelimit-429"), connection.CodeUpstreamRateLimited},
		{"subpath redirect capture", replay("23b-subpath-root-api-redirect"), connection.CodeRedirectNotAllowed},
		{"proxy 401 page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(401)
			w.Write([]byte("<html>401 Authorization Required</html>"))
		}, connection.CodeNotMattermost},
		{"html 200", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>hello</html>"))
		}, connection.CodeNotMattermost},
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, connection.CodeNotMattermost},
		{"mattermost 500", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version-Id", "11.4.0.dev.x.false")
			w.WriteHeader(500)
		}, connection.CodeUpstreamError},
		{"body over 1 MiB", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version-Id", "11.4.0.dev.x.false")
			w.Write([]byte(`{"id":"` + aliceID + `","username":"a","x":"`))
			w.Write([]byte(strings.Repeat("a", mattermost.MaxBody)))
			w.Write([]byte(`"}`))
		}, connection.CodeNotMattermost},
		{"slow headers", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, connection.CodeUpstreamTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mm := mattermosttest.NewServer(t)
			mm.Override(tc.handler)
			c := newClient(t, mm, 500*time.Millisecond)
			_, err := c.Verify(context.Background(), mm.URL, validToken)
			if got := upstreamCode(t, err); got != tc.want {
				t.Fatalf("code = %s, want %s (err %v)", got, tc.want, err)
			}
		})
	}
}

func TestVerifyRateLimitPassesRetryAfter(t *testing.T) {
	mm := mattermosttest.NewServer(t)
	c429 := mattermosttest.LoadCapture("24b-ratelimit-429")
	c429.Header.Set("Retry-After", "7")
	mm.Override(func(w http.ResponseWriter, r *http.Request) { c429.Write(w) })
	_, err := newClient(t, mm, time.Second).Verify(context.Background(), mm.URL, validToken)
	var ue *connection.UpstreamError
	if !errors.As(err, &ue) || ue.RetryAfter != 7*time.Second {
		t.Fatalf("err = %v, want rate limited with Retry-After 7s", err)
	}
}

func TestVerifyNetworkFailures(t *testing.T) {
	mm := mattermosttest.NewServer(t)
	t.Run("untrusted certificate", func(t *testing.T) {
		c := mattermost.New(mattermost.Options{Timeout: time.Second})
		if got := upstreamCode(t, mustFail(c.Verify(context.Background(), mm.URL, validToken))); got != connection.CodeUpstreamTLS {
			t.Fatalf("code = %s, want %s", got, connection.CodeUpstreamTLS)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		c := newClient(t, mm, time.Second)
		if got := upstreamCode(t, mustFail(c.Verify(context.Background(), "https://"+addr, validToken))); got != connection.CodeUpstreamUnreachable {
			t.Fatalf("code = %s, want %s", got, connection.CodeUpstreamUnreachable)
		}
	})
}

func mustFail(_ connection.Identity, err error) error { return err }

func TestServerVersion(t *testing.T) {
	for in, want := range map[string]string{
		"11.4.0.dev.62a6edf8.false": "11.4.0",
		"9.11.3.9.abc.true":         "9.11.3",
		"11.4":                      "",
		"":                          "",
		"x.y.z":                     "",
		"11.4.0":                    "11.4.0",
	} {
		if got := mattermost.ServerVersion(in); got != want {
			t.Errorf("ServerVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

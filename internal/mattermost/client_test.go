package mattermost_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/mattermost"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
)

const (
	validToken = "abcdefghijkmnopqrstuvwxyza"
	aliceID    = "b95oboh88frobdioocwwdoqhdc"
	publicIP   = "93.184.216.34" // stands for "somewhere on the Internet"; routed to loopback
	mmHost     = "mm.example.com"
)

func upstreamCode(t *testing.T, err error) string {
	t.Helper()
	var ue *connection.UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v (%T), want *connection.UpstreamError", err, err)
	}
	if strings.Contains(ue.Message, validToken) || strings.Contains(ue.Error(), validToken) {
		t.Fatalf("error carries the token: %v", ue)
	}
	if ue.Message == "" {
		t.Fatal("upstream error without a message")
	}
	return ue.Code
}

// mattermostHandler answers /api/v4/users/me for validToken like Mattermost.
func mattermostHandler(prefix string) http.HandlerFunc {
	ok := mattermosttest.LoadCapture("05-users-me-valid-bearer")
	rejected := mattermosttest.LoadCapture("08-users-me-garbage-26char")
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != prefix+"/api/v4/users/me":
			http.NotFound(w, r)
		case r.Header.Get("Authorization") == "Bearer "+validToken:
			ok.Write(w)
		default:
			rejected.Write(w)
		}
	}
}

type upstream struct {
	net    *fakeNet
	ca     *testCA
	client *mattermost.Client
}

// newUpstream is a client whose world is fakeNet; mm.example.com resolves to
// a public address that is carried to whatever server serve() starts.
func newUpstream(t *testing.T, timeout time.Duration) *upstream {
	u := &upstream{net: newFakeNet(t), ca: newTestCA(t)}
	u.net.resolve(mmHost, publicIP)
	u.client = mattermost.New(mattermost.Options{Timeout: timeout, RootCAs: u.ca.pool, Resolver: u.net, Dial: u.net.Dial})
	return u
}

// serve starts a TLS server for mm.example.com (or cert, if given) at
// publicIP:443.
func (u *upstream) serve(t *testing.T, h http.Handler) *tlsServer {
	cert := u.ca.leaf(t, []string{mmHost}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	s := startTLS(t, cert, h)
	u.net.route(publicIP+":443", s.Listener.Addr().String())
	return s
}

func TestVerifyAcceptsValidToken(t *testing.T) {
	u := newUpstream(t, 2*time.Second)
	u.serve(t, mattermostHandler(""))
	ident, err := u.client.Verify(context.Background(), "https://"+mmHost, validToken)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if ident.AnsweredAt.IsZero() {
		t.Errorf("AnsweredAt is zero; want the answer's Date")
	}
	ident.AnsweredAt = time.Time{}
	want := connection.Identity{ServerURL: "https://" + mmHost, ServerVersion: "11.4.0",
		User: connection.MattermostUser{ID: aliceID, Username: "admin", Email: "admin@example.com"}}
	if ident != want {
		t.Fatalf("Verify = %+v, want %+v", ident, want)
	}
}

// Every row is a real TLS server misbehaving in one way; each must end in
// its code, within the timeout.
func TestVerifyOutcomes(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	replay := func(name string) http.HandlerFunc {
		c := mattermosttest.LoadCapture(name)
		return func(w http.ResponseWriter, r *http.Request) { c.Write(w) }
	}
	versioned := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version-Id", "11.4.0.dev.x.false")
			w.WriteHeader(status)
			w.Write([]byte(body))
		}
	}
	redirect := func(to string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusFound) }
	}
	subpath := http.NewServeMux()
	subpath.HandleFunc("/api/v4/users/me", replay("23b-subpath-root-api-redirect"))
	subpath.HandleFunc("/mattermost/api/v4/users/me", mattermostHandler("/mattermost"))
	chain := func(n int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var i int
			if _, err := fmt.Sscanf(r.URL.Path, "/hop%d/api/v4/users/me", &i); err != nil {
				i = 0
			}
			if i < n {
				http.Redirect(w, r, "/hop"+strconv.Itoa(i+1)+"/api/v4/users/me", http.StatusTemporaryRedirect)
				return
			}
			mattermostHandler("/hop"+strconv.Itoa(i))(w, r)
		}
	}
	gzipBomb := func() []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zeros := make([]byte, 1<<20)
		for range 64 { // 64 MiB of zeros, about 64 KiB compressed
			zw.Write(zeros)
		}
		zw.Close()
		return buf.Bytes()
	}()

	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string // "" means accepted
		wantURL string
		detail  string
	}{
		{name: "same-origin redirect into a subpath", handler: subpath.ServeHTTP, wantURL: "https://" + mmHost + "/mattermost"},
		{name: "three same-origin redirects", handler: chain(3), wantURL: "https://" + mmHost + "/hop3"},
		{name: "a fourth redirect", handler: chain(4), want: connection.CodeRedirectNotAllowed, detail: "more than 3 times"},
		{name: "redirect loop", handler: redirect("/api/v4/users/me"), want: connection.CodeRedirectNotAllowed},
		{name: "cross-origin redirect", handler: redirect("https://evil.example/api/v4/users/me"), want: connection.CodeRedirectNotAllowed, detail: "https://evil.example/api/v4/users/me"},
		{name: "redirect to another port", handler: redirect("https://" + mmHost + ":8443/api/v4/users/me"), want: connection.CodeRedirectNotAllowed, detail: ":8443"},
		{name: "redirect to plain http", handler: redirect("http://" + mmHost + "/api/v4/users/me"), want: connection.CodeRedirectNotAllowed, detail: "http://"},
		{name: "redirect to a login page", handler: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/login" {
				w.Header().Set("Content-Type", "text/html")
				w.Write([]byte("<html>login</html>"))
				return
			}
			http.Redirect(w, r, "/login", http.StatusFound)
		}, want: connection.CodeNotMattermost},
		{name: "rejected token", handler: replay("08-users-me-garbage-26char"), want: connection.CodeTokenRejected, detail: "Token ID"},
		{name: "revoked token", handler: replay("15-users-me-revoked-token"), want: connection.CodeTokenRejected},
		{name: "deactivated user", handler: replay("19-users-me-deactivated-user"), want: connection.CodeTokenRejected},
		{name: "tokens disabled", handler: replay("17b-users-me-pats-disabled-fresh-token"), want: connection.CodeTokenRejected},
		{name: "403 with a Mattermost body only", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(403)
			w.Write([]byte(`{"id":"api.context.permissions.app_error","message":"x","status_code":403}`))
		}, want: connection.CodeTokenRejected},
		{name: "proxy 401 page", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(401)
			w.Write([]byte("<html>401 Authorization Required</html>"))
		}, want: connection.CodeNotMattermost},
		{name: "html 200", handler: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>hello</html>")) }, want: connection.CodeNotMattermost},
		{name: "200 json without X-Version-Id", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"id":"` + aliceID + `","username":"a"}`))
		}, want: connection.CodeNotMattermost},
		{name: "200 without a user object", handler: versioned(200, `{"status":"OK"}`), want: connection.CodeNotMattermost},
		{name: "404", handler: http.NotFound, want: connection.CodeNotMattermost},
		{name: "400 from Mattermost", handler: versioned(400, `{}`), want: connection.CodeNotMattermost},
		{name: "mattermost 500", handler: versioned(500, `{"id":"x","status_code":500}`), want: connection.CodeUpstreamError},
		{name: "proxy 502", handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) }, want: connection.CodeUpstreamError},
		{name: "rate limited", handler: replay("24b-ratelimit-429"), want: connection.CodeUpstreamRateLimited},
		{name: "body over 1 MiB", handler: versioned(200, `{"id":"`+aliceID+`","username":"a","x":"`+strings.Repeat("a", mattermost.MaxBody)+`"}`), want: connection.CodeNotMattermost},
		{name: "endless body", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version-Id", "11.4.0.dev.x.false")
			chunk := bytes.Repeat([]byte("a"), 32<<10)
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, want: connection.CodeNotMattermost},
		{name: "gzip bomb", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version-Id", "11.4.0.dev.x.false")
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gzipBomb)
		}, want: connection.CodeNotMattermost},
		{name: "slow headers", handler: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}, want: connection.CodeUpstreamTimeout, detail: "did not answer in time"},
		{name: "body dripping a byte a second", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version-Id", "11.4.0.dev.x.false")
			w.WriteHeader(200)
			for i := 0; i < 20 && r.Context().Err() == nil; i++ {
				w.Write([]byte(" "))
				w.(http.Flusher).Flush()
				time.Sleep(time.Second)
			}
		}, want: connection.CodeUpstreamTimeout},
		{name: "connection reset", handler: func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
				if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
					tcp.SetLinger(0)
				}
			}
			conn.Close()
		}, want: connection.CodeUpstreamUnreachable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, timeout)
			u.serve(t, tc.handler)
			start := time.Now()
			ident, err := u.client.Verify(context.Background(), "https://"+mmHost, validToken)
			elapsed := time.Since(start)
			if elapsed > timeout+time.Second {
				t.Errorf("took %v, beyond the %v timeout", elapsed, timeout)
			}
			if u.net.read.Load() > mattermost.MaxBody+256<<10 {
				t.Errorf("read %d bytes from upstream, more than 1 MiB and change", u.net.read.Load())
			}
			for _, d := range u.net.dials() {
				if d != publicIP+":443" {
					t.Errorf("dialled %s", d)
				}
			}
			if tc.want == "" {
				if err != nil || ident.ServerURL != tc.wantURL || ident.User.ID != aliceID {
					t.Fatalf("Verify = %+v, %v; want accepted at %s", ident, err, tc.wantURL)
				}
				return
			}
			if got := upstreamCode(t, err); got != tc.want {
				t.Fatalf("code = %s, want %s (%v)", got, tc.want, err)
			}
			var ue *connection.UpstreamError
			errors.As(err, &ue)
			if !strings.Contains(ue.Message, mmHost) {
				t.Errorf("message does not name the server: %q", ue.Message)
			}
			if tc.detail != "" && !strings.Contains(ue.Message, tc.detail) {
				t.Errorf("message %q does not mention %q", ue.Message, tc.detail)
			}
		})
	}
}

func TestVerifyTLSFailures(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		cert   func(u *upstream) (certNames []string, from, to time.Time, otherCA bool)
		detail string
	}{
		{"certificate for another name", func(*upstream) ([]string, time.Time, time.Time, bool) {
			return []string{"other.example.com"}, now.Add(-time.Hour), now.Add(time.Hour), false
		}, "not valid for that name"},
		{"expired certificate", func(*upstream) ([]string, time.Time, time.Time, bool) {
			return []string{mmHost}, now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), false
		}, "expired"},
		{"self-signed without MMCONNECT_UPSTREAM_CA_FILE", func(*upstream) ([]string, time.Time, time.Time, bool) {
			return []string{mmHost}, now.Add(-time.Hour), now.Add(time.Hour), true
		}, "authority"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, 2*time.Second)
			names, from, to, otherCA := tc.cert(u)
			ca := u.ca
			if otherCA {
				ca = newTestCA(t)
			}
			s := startTLS(t, ca.leaf(t, names, from, to), mattermostHandler(""))
			u.net.route(publicIP+":443", s.Listener.Addr().String())
			_, err := u.client.Verify(context.Background(), "https://"+mmHost, validToken)
			if got := upstreamCode(t, err); got != connection.CodeUpstreamTLS {
				t.Fatalf("code = %s, want %s (%v)", got, connection.CodeUpstreamTLS, err)
			}
			if !strings.Contains(err.(*connection.UpstreamError).Message, tc.detail) {
				t.Errorf("message %q does not say %q", err.(*connection.UpstreamError).Message, tc.detail)
			}
		})
	}
	// Plain HTTP on the HTTPS port is never retried over http:// on our own;
	// the message says what the user can do, which depends on the operator.
	for _, allowHTTP := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain HTTP on the HTTPS port, allow_http=%v", allowHTTP), func(t *testing.T) {
			u := newUpstream(t, 2*time.Second)
			u.client = mattermost.New(mattermost.Options{Timeout: 2 * time.Second, RootCAs: u.ca.pool, Resolver: u.net, Dial: u.net.Dial, AllowHTTP: allowHTTP})
			var plain atomic.Int64
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				plain.Add(1)
				mattermostHandler("")(w, r)
			}))
			t.Cleanup(s.Close)
			u.net.route(publicIP+":443", s.Listener.Addr().String())
			_, err := u.client.Verify(context.Background(), "https://"+mmHost, validToken)
			if got := upstreamCode(t, err); got != connection.CodeUpstreamTLS {
				t.Fatalf("code = %s, want %s (%v)", got, connection.CodeUpstreamTLS, err)
			}
			msg := err.(*connection.UpstreamError).Message
			want := "HTTPS only"
			if allowHTTP {
				want = "starting with http://"
			}
			if !strings.Contains(msg, "plain HTTP") || !strings.Contains(msg, want) || strings.Contains(msg, "certificate") {
				t.Errorf("message %q; want it to say the server answered in plain HTTP and %q", msg, want)
			}
			if plain.Load() != 0 {
				t.Errorf("%d requests were answered in plain HTTP: the check downgraded", plain.Load())
			}
		})
	}
}

func TestVerifyNetworkFailures(t *testing.T) {
	u := newUpstream(t, 2*time.Second)
	u.net.resolveFunc("servfail.example", func(int) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "server misbehaving", Name: "servfail.example", IsTemporary: true}
	})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()
	u.net.resolve("refused.example", "93.184.216.35")
	u.net.route("93.184.216.35:443", closed)
	for _, tc := range []struct{ host, want string }{
		{"nxdomain.example", connection.CodeHostNotFound},
		{"servfail.example", connection.CodeUpstreamUnreachable},
		{"refused.example", connection.CodeUpstreamUnreachable},
	} {
		_, err := u.client.Verify(context.Background(), "https://"+tc.host, validToken)
		if got := upstreamCode(t, err); got != tc.want {
			t.Errorf("%s: code = %s, want %s (%v)", tc.host, got, tc.want, err)
		}
	}
}

func TestVerifyRateLimitPassesRetryAfter(t *testing.T) {
	u := newUpstream(t, time.Second)
	c429 := mattermosttest.LoadCapture("24b-ratelimit-429")
	c429.Header.Set("Retry-After", "7")
	u.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c429.Write(w) }))
	_, err := u.client.Verify(context.Background(), "https://"+mmHost, validToken)
	var ue *connection.UpstreamError
	if !errors.As(err, &ue) || ue.Code != connection.CodeUpstreamRateLimited || ue.RetryAfter != 7*time.Second {
		t.Fatalf("err = %v, want rate limited with Retry-After 7s", err)
	}
}

// Many checks against one server reuse its connections: few handshakes.
// The checks wait for the client's pool (pooledChecks) so that the count
// is of reuse, not of timing: a check that found no idle connection dials
// one, and when another check's connection comes back first it takes that
// instead, while its dial goes on (its connection joins the pool later).
// Under the race detector a TLS handshake can outlast a whole round of
// checks, so each round began with connections still being dialed and
// dialed more, up to 10 handshakes.
func TestVerifyReusesConnections(t *testing.T) {
	u := newUpstream(t, 2*time.Second)
	s := u.serve(t, mattermostHandler(""))
	k := &pooledChecks{c: u.client}
	for i := range 50 {
		if err := k.verify(t, validToken); err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
	if n := s.conns.Load(); n > 1 {
		t.Fatalf("50 sequential checks made %d TLS handshakes, want 1", n)
	}
	var wg sync.WaitGroup
	for range 5 {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := k.verify(t, validToken); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		k.settle(t)
	}
	if n := s.conns.Load(); n > 8 {
		t.Fatalf("70 checks, 4 at a time, made %d TLS handshakes, want at most 8", n)
	}
	// A rejected token answers with a body too; the connection survives it.
	before := s.conns.Load()
	for range 10 {
		k.verify(t, "zzzzzzzzzzzzzzzzzzzzzzzzzy")
	}
	if n := s.conns.Load() - before; n > 1 {
		t.Fatalf("10 rejected checks made %d new connections", n)
	}
}

// pooledChecks runs checks against mmHost with c and follows c's pool
// through each check's trace: its answer's connection going back, and the
// dials under way, from the connect to the end of the TLS handshake.
type pooledChecks struct {
	c       *mattermost.Client
	dialing atomic.Int64
}

// verify runs a check with token and returns once the transport has put
// the check's connection back in the pool (or failed to): a check returns
// as soon as its answer is read, and the transport puts the connection
// back a moment later, from a goroutine of its own. A connection that
// does not go back within 10 s fails the test. Errors: Verify's.
func (k *pooledChecks) verify(t *testing.T, token string) error {
	back := make(chan struct{}, 1)
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		ConnectStart: func(string, string) { k.dialing.Add(1) },
		ConnectDone: func(_, _ string, err error) {
			if err != nil {
				k.dialing.Add(-1)
			}
		},
		TLSHandshakeDone: func(tls.ConnectionState, error) { k.dialing.Add(-1) },
		PutIdleConn: func(error) {
			select {
			case back <- struct{}{}:
			default:
			}
		},
	})
	_, err := k.c.Verify(ctx, "https://"+mmHost, token)
	select {
	case <-back:
	case <-time.After(10 * time.Second):
		t.Error("a check's connection did not go back to the pool within 10 s")
	}
	return err
}

// settle waits until every dial under way has finished its handshake, so
// that its connection is in the pool before the next checks; 10 s
// without that fails the test. A dial runs in a goroutine of its own,
// begun before the check that wanted it got any connection, so it has
// begun connecting long before that check has its answer; one that had
// not would only add a handshake, where the bound leaves room for four
// (the rounds need 4 connections when they wait).
func (k *pooledChecks) settle(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); k.dialing.Load() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d dials still under way after 10 s", k.dialing.Load())
		}
	}
}

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

// FuzzClassify: any answer ends in an Identity with a Mattermost user id or
// an UpstreamError with a known code whose message names the server and
// repeats nothing of the body.
func FuzzClassify(f *testing.F) {
	for _, name := range []string{"05-users-me-valid-bearer", "08-users-me-garbage-26char", "24b-ratelimit-429", "23b-subpath-root-api-redirect"} {
		c := mattermosttest.LoadCapture(name)
		f.Add(c.Status, c.Header.Get("X-Version-Id"), c.Header.Get("Retry-After"), c.Body)
	}
	f.Add(200, "", "", []byte("<html>"))
	f.Add(401, "", "", []byte(`{"id":"x","status_code":401}`))
	known := map[string]bool{}
	for _, c := range []string{connection.CodeTokenRejected, connection.CodeNotMattermost, connection.CodeRedirectNotAllowed,
		connection.CodeUpstreamError, connection.CodeUpstreamRateLimited} {
		known[c] = true
	}
	f.Fuzz(func(t *testing.T, status int, version, retryAfter string, body []byte) {
		h := http.Header{}
		h.Set("X-Version-Id", version)
		h.Set("Retry-After", retryAfter)
		const server = "https://fuzz.example"
		ident, err := mattermost.Classify(server, status, h, body)
		if err == nil {
			if len(ident.User.ID) != 26 || ident.User.Username == "" || ident.ServerVersion == "" || status != 200 {
				t.Fatalf("accepted %d %q: %+v", status, body, ident)
			}
			var u map[string]any
			if json.Unmarshal(body, &u) != nil {
				t.Fatalf("accepted a body that is not JSON: %q", body)
			}
			return
		}
		var ue *connection.UpstreamError
		if !errors.As(err, &ue) || !known[ue.Code] || !strings.Contains(ue.Message, server) {
			t.Fatalf("Classify(%d) = %v", status, err)
		}
		if ue.RetryAfter < 0 || ue.RetryAfter > 24*time.Hour {
			t.Fatalf("RetryAfter = %v", ue.RetryAfter)
		}
		if len(body) > 8 && strings.Contains(ue.Message, string(body)) {
			t.Fatalf("message repeats the body")
		}
	})
}

// A proxy from the environment is never used: the check connects to the
// server the user named, through the guard.
func TestVerifyIgnoresProxyEnvironment(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://10.0.0.1:3128")
	t.Setenv("HTTP_PROXY", "http://10.0.0.1:3128")
	u := newUpstream(t, 2*time.Second)
	u.serve(t, mattermostHandler(""))
	if _, err := u.client.Verify(context.Background(), "https://"+mmHost, validToken); err != nil {
		t.Fatalf("Verify with a proxy in the environment: %v", err)
	}
	if d := u.net.dials(); len(d) != 1 || d[0] != publicIP+":443" {
		t.Fatalf("dialled %v, want only the server", d)
	}
}

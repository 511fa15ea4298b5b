// Package mattermosttest is a fake Mattermost for tests: a TLS httptest
// server whose answers are replayed from real Mattermost 11.4.0 captures
// (testdata/*.http), with the user swapped for the one a token belongs to.
package mattermosttest

import (
	"bufio"
	"bytes"
	"embed"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

//go:embed testdata/*.http
var captures embed.FS

// Capture is one recorded answer.
type Capture struct {
	Status int
	Header http.Header
	Body   []byte
}

// LoadCapture reads testdata/<name>.http.
func LoadCapture(name string) Capture {
	raw, err := captures.ReadFile("testdata/" + name + ".http")
	if err != nil {
		panic(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		panic(fmt.Sprintf("capture %s: %v", name, err))
	}
	body, _ := io.ReadAll(resp.Body)
	h := resp.Header.Clone()
	h.Del("Content-Length")
	h.Del("Date")
	return Capture{Status: resp.StatusCode, Header: h, Body: body}
}

// Write replays the capture.
func (c Capture) Write(w http.ResponseWriter) {
	for k, v := range c.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(c.Status)
	_, _ = w.Write(c.Body)
}

// User is a Mattermost account a token belongs to.
type User struct {
	ID       string
	Username string
	Email    string
}

// Server answers GET /api/v4/users/me like Mattermost.
type Server struct {
	*httptest.Server
	mu       sync.Mutex
	tokens   map[string]User
	requests atomic.Int64
	// Override, when set, answers every request instead (failure modes).
	override atomic.Pointer[http.HandlerFunc]
	subpath  atomic.Pointer[string]
}

// ServeUnder makes the server live under a subpath, as Mattermost with
// SiteURL https://host/<subpath> does: the API is at <subpath>/api/v4 and
// the root API redirects there.
func (s *Server) ServeUnder(subpath string) { s.subpath.Store(&subpath) }

// NewServer starts a TLS fake; it is closed when the test ends.
func NewServer(t testing.TB) *Server {
	s := &Server{tokens: map[string]User{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// AddToken makes token valid for u.
func (s *Server) AddToken(token string, u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = u
}

// RevokeToken makes token answer 401 like a revoked token does.
func (s *Server) RevokeToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, token)
}

// Override makes every request answer with h (nil restores Mattermost).
func (s *Server) Override(h http.HandlerFunc) {
	if h == nil {
		s.override.Store(nil)
		return
	}
	s.override.Store(&h)
}

// Requests counts requests served.
func (s *Server) Requests() int64 { return s.requests.Load() }

// CAFile writes the server's certificate as PEM into dir and returns its
// path, for MMCONNECT_UPSTREAM_CA_FILE.
func (s *Server) CAFile(t testing.TB) string {
	path := filepath.Join(t.TempDir(), "upstream-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if h := s.override.Load(); h != nil {
		(*h)(w, r)
		return
	}
	prefix := ""
	if p := s.subpath.Load(); p != nil {
		prefix = *p
	}
	if prefix != "" && strings.HasPrefix(r.URL.Path, "/api/v4/") {
		w.Header().Set("Location", prefix+r.URL.Path)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusFound)
		fmt.Fprintf(w, "<a href=\"%s\">Found</a>.\n\n", prefix+r.URL.Path)
		return
	}
	if r.URL.Path != prefix+"/api/v4/users/me" {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("access_token") != "" {
		LoadCapture("10-users-me-pat-in-query").Write(w)
		return
	}
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		LoadCapture("09-users-me-no-auth").Write(w)
		return
	}
	s.mu.Lock()
	u, ok := s.tokens[token]
	s.mu.Unlock()
	if !ok {
		LoadCapture("08-users-me-garbage-26char").Write(w)
		return
	}
	c := LoadCapture("05-users-me-valid-bearer")
	var user map[string]any
	if err := json.Unmarshal(c.Body, &user); err != nil {
		panic(err)
	}
	user["id"], user["username"], user["email"] = u.ID, u.Username, u.Email
	c.Body, _ = json.Marshal(user)
	c.Write(w)
}

// bearer reads "Bearer <t>" (any case) or "Token <t>", as Mattermost does.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || token == "" {
		return "", false
	}
	if strings.EqualFold(scheme, "bearer") || strings.EqualFold(scheme, "token") {
		return token, true
	}
	return "", false
}

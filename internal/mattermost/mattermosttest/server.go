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
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	// NoRevokeRole: the account may not revoke its own tokens (a plain
	// user without the personal access token role, capture 18a).
	NoRevokeRole bool
	// IsBot answers users/me like a bot account (capture 26).
	IsBot bool
}

// pat is one personal access token: its id, its owner, and the session
// Mattermost makes on its first use (zero until then).
type pat struct {
	id      string
	user    User
	session time.Time
}

// Server answers like Mattermost: GET /api/v4/users/me, GET
// /api/v4/users/me/sessions and POST /api/v4/users/tokens/revoke.
type Server struct {
	*httptest.Server
	mu       sync.Mutex
	tokens   map[string]*pat
	byUser   map[string]map[string]bool // user id → tokens
	requests atomic.Int64
	// paths counts requests per path.
	paths sync.Map
	// revokes counts revoke calls.
	revokes atomic.Int64
	// tokenOutsideAPI counts requests carrying a token to a path that is
	// not the API.
	tokenOutsideAPI atomic.Int64
	// conns counts accepted connections (TLS handshakes).
	conns atomic.Int64
	// Override, when set, answers every request instead (failure modes).
	override atomic.Pointer[http.HandlerFunc]
	subpath  atomic.Pointer[string]
	// traceparents are the W3C trace contexts requests carried.
	traceparents []string
	// answers are the captures and the bodies made from them, read once
	// at start (load runs ask thousands of times a second).
	answers answers
}

// answers are what the fake replays: every capture, and templates of the
// bodies that name the caller (users/me and its sessions).
type answers struct {
	captures               map[string]Capture
	user, bot              template
	patSession, webSession template
}

func loadAnswers() answers {
	entries, err := captures.ReadDir("testdata")
	if err != nil {
		panic(err)
	}
	a := answers{captures: map[string]Capture{}}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".http")
		a.captures[name] = LoadCapture(name)
	}
	user := func(name string) template {
		var u map[string]any
		if err := json.Unmarshal(a.captures[name].Body, &u); err != nil {
			panic(err)
		}
		u["id"], u["username"], u["email"] = "@id@", "@username@", "@email@"
		return newTemplate(u)
	}
	a.user, a.bot = user("05-users-me-valid-bearer"), user("26-users-me-bot")
	var sessions []map[string]any
	if err := json.Unmarshal(a.captures["11-users-me-sessions-with-pat"].Body, &sessions); err != nil {
		panic(err)
	}
	pat, web := sessions[0], sessions[1]
	pat["id"], pat["user_id"], pat["create_at"] = "@id@", "@user_id@", "@create_at@"
	pat["props"] = map[string]any{"is_guest": "false", "type": "UserAccessToken", "user_access_token_id": "@token_id@"}
	web["user_id"] = "@user_id@"
	a.patSession, a.webSession = newTemplate(pat), newTemplate(web)
	return a
}

// capture is the capture called name.
func (s *Server) capture(name string) Capture {
	c, ok := s.answers.captures[name]
	if !ok {
		panic("no capture " + name)
	}
	return c
}

// template is a JSON value with its placeholders (strings "@name@") cut
// out, so that an answer is a few appends instead of a decode and an
// encode.
type template struct {
	parts []string // text around the slots: len(slots)+1
	slots []string // placeholder names, in order
}

var placeholder = regexp.MustCompile(`"@([a-z_]+)@"`)

func newTemplate(v any) template {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var t template
	last := 0
	for _, m := range placeholder.FindAllSubmatchIndex(raw, -1) {
		t.parts = append(t.parts, string(raw[last:m[0]]))
		t.slots = append(t.slots, string(raw[m[2]:m[3]]))
		last = m[1]
	}
	t.parts = append(t.parts, string(raw[last:]))
	return t
}

// render appends the value with each slot replaced by vals[slot], which
// is JSON (quote strings with jsonString).
func (t template) render(buf []byte, vals map[string]string) []byte {
	for i, slot := range t.slots {
		buf = append(buf, t.parts[i]...)
		buf = append(buf, vals[slot]...)
	}
	return append(buf, t.parts[len(t.parts)-1]...)
}

// jsonString is s as a JSON string.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// ServeUnder makes the server live under a subpath, as Mattermost with
// SiteURL https://host/<subpath> does: the API is at <subpath>/api/v4 and
// the root API redirects there.
func (s *Server) ServeUnder(subpath string) { s.subpath.Store(&subpath) }

// NewServer starts a TLS fake; it is closed when the test ends.
func NewServer(t testing.TB) *Server {
	s := Start()
	t.Cleanup(s.Close)
	return s
}

// Start starts a TLS fake outside a test (load runs); Close it when done.
func Start() *Server {
	s := &Server{tokens: map[string]*pat{}, byUser: map[string]map[string]bool{}, answers: loadAnswers()}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Server.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Server.StartTLS()
	return s
}

// Connections counts the connections clients opened, each with its own
// TLS handshake.
func (s *Server) Connections() int64 { return s.conns.Load() }

// WriteCAFile writes the server's certificate as PEM to path, for
// MMCONNECT_UPSTREAM_CA_FILE.
func (s *Server) WriteCAFile(path string) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o600)
}

// AddToken makes token valid for u; its token id is derived from it
// (TokenIDOf).
func (s *Server) AddToken(token string, u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = &pat{id: TokenIDOf(token), user: u}
	if s.byUser[u.ID] == nil {
		s.byUser[u.ID] = map[string]bool{}
	}
	s.byUser[u.ID][token] = true
}

// TokenIDOf is the id the fake gives token: the token reversed, so it is
// a valid id and plainly not the token.
func TokenIDOf(token string) string {
	b := []byte(token)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// UseToken records a first use of token at t, as if it had been used
// before mmconnect saw it (its session exists already).
func (s *Server) UseToken(token string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.tokens[token]; p != nil {
		p.session = t
	}
}

// RevokeToken makes token answer 401 like a revoked token does.
func (s *Server) RevokeToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget(token)
}

// forget removes a token; s.mu is held.
func (s *Server) forget(token string) {
	if p := s.tokens[token]; p != nil {
		delete(s.byUser[p.user.ID], token)
	}
	delete(s.tokens, token)
}

// HasToken tells whether token still works.
func (s *Server) HasToken(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens[token] != nil
}

// PathRequests counts requests to path.
func (s *Server) PathRequests(path string) int64 {
	if v, ok := s.paths.Load(path); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// TokenSentOutsideAPI counts requests that carried Authorization to a path
// that is not the API (the web app's pages).
func (s *Server) TokenSentOutsideAPI() int64 { return s.tokenOutsideAPI.Load() }

// Revokes counts calls of POST /api/v4/users/tokens/revoke.
func (s *Server) Revokes() int64 { return s.revokes.Load() }

// Override makes every request answer with h (nil restores Mattermost).
func (s *Server) Override(h http.HandlerFunc) {
	if h == nil {
		s.override.Store(nil)
		return
	}
	s.override.Store(&h)
}

// TraceParents are the W3C traceparent headers requests carried, in order.
func (s *Server) TraceParents() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.traceparents)
}

// Requests counts requests served.
func (s *Server) Requests() int64 { return s.requests.Load() }

// CAFile writes the server's certificate as PEM into dir and returns its
// path, for MMCONNECT_UPSTREAM_CA_FILE.
func (s *Server) CAFile(t testing.TB) string {
	path := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := s.WriteCAFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if tp := r.Header.Get("Traceparent"); tp != "" {
		s.mu.Lock()
		s.traceparents = append(s.traceparents, tp)
		s.mu.Unlock()
	}
	counter, _ := s.paths.LoadOrStore(r.URL.Path, new(atomic.Int64))
	counter.(*atomic.Int64).Add(1)
	if h := s.override.Load(); h != nil {
		(*h)(w, r)
		return
	}
	prefix := ""
	if p := s.subpath.Load(); p != nil {
		prefix = *p
	}
	if prefix != "" && strings.HasPrefix(r.URL.Path, "/api/v4/") && !strings.HasPrefix(r.URL.Path, prefix+"/") {
		w.Header().Set("Location", prefix+r.URL.Path)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusFound)
		fmt.Fprintf(w, "<a href=\"%s\">Found</a>.\n\n", prefix+r.URL.Path)
		return
	}
	path, ok := strings.CutPrefix(r.URL.Path, prefix+"/api/v4/")
	if !ok {
		// Every path that is not the API gets the web app's page
		// (capture 25), a pasted team or channel address included.
		if r.Header.Get("Authorization") != "" {
			s.tokenOutsideAPI.Add(1)
		}
		s.capture("25-web-path-users-me").Write(w)
		return
	}
	if path == "system/ping" {
		s.capture("20-system-ping-unauth").Write(w) // needs no token
		return
	}
	if r.URL.Query().Get("access_token") != "" {
		s.capture("10-users-me-pat-in-query").Write(w)
		return
	}
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		s.capture("09-users-me-no-auth").Write(w)
		return
	}
	// Like Mattermost, the first use of a token makes its session; the
	// answer's Date is the same clock.
	now := time.Now().UTC()
	w.Header().Set("Date", now.Format(http.TimeFormat))
	s.mu.Lock()
	p := s.tokens[token]
	var tok pat
	if p != nil {
		if p.session.IsZero() {
			p.session = now
		}
		tok = *p
	}
	s.mu.Unlock()
	if p == nil {
		s.capture("08-users-me-garbage-26char").Write(w)
		return
	}
	switch {
	case path == "users/me" && r.Method == http.MethodGet:
		c, t := s.capture("05-users-me-valid-bearer"), s.answers.user
		if tok.user.IsBot {
			c, t = s.capture("26-users-me-bot"), s.answers.bot
		}
		c.Body = t.render(nil, map[string]string{"id": jsonString(tok.user.ID), "username": jsonString(tok.user.Username),
			"email": jsonString(tok.user.Email)})
		c.Write(w)
	case path == "users/me/sessions" && r.Method == http.MethodGet:
		s.writeSessions(w, tok.user.ID)
	case path == "users/tokens/revoke" && r.Method == http.MethodPost:
		s.revoke(w, r, tok)
	default:
		http.NotFound(w, r)
	}
}

// writeSessions answers like capture 11: the account's sessions, one per
// used token plus a web login whose csrf secret must never leave mmconnect.
func (s *Server) writeSessions(w http.ResponseWriter, userID string) {
	c := s.capture("11-users-me-sessions-with-pat")
	user := jsonString(userID)
	body := []byte{'['}
	s.mu.Lock()
	for token := range s.byUser[userID] {
		p := s.tokens[token]
		if p.session.IsZero() {
			continue
		}
		body = s.answers.patSession.render(body, map[string]string{"id": jsonString(TokenIDOf(p.id)), "user_id": user,
			"create_at": strconv.FormatInt(p.session.UnixMilli(), 10), "token_id": jsonString(p.id)})
		body = append(body, ',')
	}
	s.mu.Unlock()
	body = s.answers.webSession.render(body, map[string]string{"user_id": user})
	c.Body = append(body, ']')
	c.Write(w)
}

// WebSessionCSRF is the csrf secret in the fake's web session: it must
// never appear in mmconnect's logs, database or answers.
const WebSessionCSRF = "djcscy7iibgh3ddf78b4ia9tcw"

// revoke answers POST /api/v4/users/tokens/revoke like captures 14, 18a and
// 13a.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request, caller pat) {
	s.revokes.Add(1)
	var body struct {
		TokenID string `json:"token_id"`
	}
	_ = json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body)
	if caller.user.NoRevokeRole {
		s.capture("18a-self-revoke-without-role").Write(w)
		return
	}
	s.mu.Lock()
	found := ""
	for t := range s.byUser[caller.user.ID] {
		if s.tokens[t].id == body.TokenID {
			found = t
		}
	}
	if found != "" {
		s.forget(found)
	}
	s.mu.Unlock()
	if found == "" {
		s.capture("13a-revoke-bogus-id-to-log-audit").Write(w)
		return
	}
	s.capture("14-self-revoke-pat").Write(w)
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

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/api"
	"github.com/mmconnect/mmconnect/internal/logtest"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
)

const (
	tokenA = "abcdefghijkmnopqrstuvwxyza"
	tokenB = "zyxwvutsrqponmkjihgfedcbay"
)

// instance is one run() of the real program on 127.0.0.1:0.
type instance struct {
	t      *testing.T
	base   string
	logs   *logtest.Buffer
	cancel context.CancelFunc
	done   chan error
	key    string
	env    map[string]string
}

var listeningRE = regexp.MustCompile(`"msg":"listening","addr":"([^"]+)"`)

func start(t *testing.T, env map[string]string) *instance {
	t.Helper()
	in := launch(t, env)
	in.waitReady()
	return in
}

// launch calls run() in the background; waitReady waits until it serves.
// Several replicas can be launched first and waited for after, so they
// start at the same moment.
func launch(t *testing.T, env map[string]string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{t: t, logs: &logtest.Buffer{}, cancel: cancel, done: make(chan error, 1), env: env}
	getenv := func(k string) string { return env[k] }
	go func() { in.done <- run(ctx, nil, getenv, io.Discard, in.logs) }()
	t.Cleanup(func() { in.stop() })
	return in
}

func (in *instance) waitReady() {
	t := in.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(in.logs.String()); m != nil {
			in.base = "http://" + m[1]
			break
		}
		select {
		case err := <-in.done:
			in.cancel = nil
			t.Fatalf("run exited before listening: %v\n%s", err, in.logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not listening after 30s:\n%s", in.logs.String())
		}
	}
	for {
		resp, err := http.Get(in.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz not answering: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if keys := in.env["MMCONNECT_API_KEYS"]; keys != "" {
		in.key = strings.Split(keys, ",")[0]
		return
	}
	key, err := os.ReadFile(filepath.Join(in.env["MMCONNECT_DATA_DIR"], "api-key"))
	if err != nil {
		t.Fatalf("api-key file: %v", err)
	}
	in.key = strings.TrimSpace(string(key))
}

func (in *instance) stop() {
	in.t.Helper()
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if err != nil {
			in.t.Errorf("run returned %v", err)
		}
	case <-time.After(35 * time.Second):
		in.t.Error("run did not return after cancel")
	}
}

func (in *instance) call(method, path string, body any) (int, map[string]any, http.Header) {
	in.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, in.base+path, r)
	req.Header.Set("Authorization", "Bearer "+in.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m, resp.Header
}

// alice is the account tokenA belongs to in the fake Mattermost.
func alice() mattermosttest.User {
	return mattermosttest.User{ID: userAlice, Username: "alice", Email: "alice@example.com"}
}

// newMattermost starts a fake Mattermost (closed when the test ends) in
// which tokenA is alice's.
func newMattermost(t *testing.T) *mattermosttest.Server {
	mm := mattermosttest.NewServer(t)
	mm.AddToken(tokenA, alice())
	return mm
}

func newEnv(t *testing.T, mm *mattermosttest.Server) map[string]string {
	return map[string]string{
		"MMCONNECT_ADDR":             "127.0.0.1:0",
		"MMCONNECT_DATA_DIR":         t.TempDir(),
		"MMCONNECT_UPSTREAM_CA_FILE": mm.CAFile(t),
		"MMCONNECT_UPSTREAM_TIMEOUT": "5s",
		// The fake Mattermost listens on loopback, which is refused by default.
		"MMCONNECT_ALLOWED_NETWORKS": "127.0.0.0/8",
	}
}

func TestEndToEndLifecycleAndRestart(t *testing.T) {
	mm := newMattermost(t)
	mm.AddToken(tokenB, mattermosttest.User{ID: "sijnzjnrq7dfmy7u4f6m651gpr", Username: "bob", Email: "bob@example.com"})
	env := newEnv(t, mm)
	in := start(t, env)

	status, a, hdr := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "u1"})
	if status != 201 || hdr.Get("Location") == "" {
		t.Fatalf("create = %d %v", status, a)
	}
	idA := a["id"].(string)
	status, b, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenB})
	if status != 201 {
		t.Fatalf("create B = %d %v", status, b)
	}
	idB := b["id"].(string)
	if status, got, _ := in.call("GET", "/connections/"+idA, nil); status != 200 || got["status"] != "active" {
		t.Fatalf("get = %d %v", status, got)
	}
	if status, list, _ := in.call("GET", "/connections?end_user_id=u1", nil); status != 200 || len(list["data"].([]any)) != 1 {
		t.Fatalf("list = %d %v", status, list)
	}
	if status, v, _ := in.call("POST", "/connections/"+idA+"/verify", nil); status != 200 || v["status"] != "active" {
		t.Fatalf("verify = %d %v", status, v)
	}
	if status, cred, _ := in.call("GET", "/connections/"+idA+"/credentials", nil); status != 200 || cred["token"] != tokenA {
		t.Fatalf("credentials = %d", status)
	}
	if status, _, _ := in.call("DELETE", "/connections/"+idB, nil); status != 204 {
		t.Fatalf("delete = %d", status)
	}
	in.stop()

	logs := in.logs.String()
	for _, want := range []string{`"msg":"starting"`, `"msg":"generated an API key; read it from the file"`, `"msg":"database closed"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	// The access lines, held to be written together, are all out by the
	// end, and in order: before the lines of the shutdown.
	if n := strings.Count(logs, `"msg":"request"`); n < 7 {
		t.Errorf("logs hold %d access lines, want one for each of the 7 requests", n)
	}
	if strings.LastIndex(logs, `"msg":"request"`) > strings.Index(logs, `"msg":"database closed"`) {
		t.Errorf("an access line came out after the shutdown's lines")
	}
	for _, secret := range []string{tokenA, tokenB, in.key} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (…%s) is in the logs", secret[len(secret)-4:])
		}
	}
	entries, _ := os.ReadDir(env["MMCONNECT_DATA_DIR"])
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		raw, _ := os.ReadFile(filepath.Join(env["MMCONNECT_DATA_DIR"], e.Name()))
		for _, tok := range []string{tokenA, tokenB} {
			if bytes.Contains(raw, []byte(tok)) {
				t.Errorf("token …%s found in plain in %s", tok[22:], e.Name())
			}
		}
	}
	for _, want := range []string{"mmconnect.db", "api-key", "encryption-key"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("data dir lacks %s: %v", want, names)
		}
	}
	for _, f := range []string{"api-key", "encryption-key", "mmconnect.db"} {
		if st, err := os.Stat(filepath.Join(env["MMCONNECT_DATA_DIR"], f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v (%v), want 0600", f, st.Mode().Perm(), err)
		}
	}

	// Restart on the same data dir: same key, every connection kept, the
	// token still opens.
	again := start(t, env)
	if again.key != in.key {
		t.Fatal("the API key changed across a restart")
	}
	if !strings.Contains(again.logs.String(), "using the API key in the file") {
		t.Error("restart did not reuse the key file")
	}
	if status, cred, _ := again.call("GET", "/connections/"+idA+"/credentials", nil); status != 200 || cred["token"] != tokenA {
		t.Fatalf("credentials after restart = %d %v", status, cred)
	}
	if status, got, _ := again.call("GET", "/connections/"+idB, nil); status != 200 || got["status"] != "revoked" {
		t.Fatalf("revoked connection after restart = %d %v", status, got)
	}
}

func TestShutdownDrainsRequestsInFlight(t *testing.T) {
	mm := mattermosttest.NewServer(t)
	mm.AddToken(tokenA, mattermosttest.User{ID: "b95oboh88frobdioocwwdoqhdc", Username: "alice"})
	in := start(t, newEnv(t, mm))
	entered := make(chan struct{})
	mm.Override(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		time.Sleep(500 * time.Millisecond)
		mm.Override(nil)
		mattermosttest.LoadCapture("05-users-me-valid-bearer").Write(w)
	})
	result := make(chan int, 1)
	go func() {
		status, _, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA})
		result <- status
	}()
	<-entered
	in.stop() // SIGTERM while the upstream check is in flight
	if status := <-result; status != 201 {
		t.Fatalf("request in flight during shutdown = %d, want 201", status)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for name, value := range map[string]string{
		"MMCONNECT_ADDR":             "nonsense",
		"MMCONNECT_UPSTREAM_TIMEOUT": "soon",
		"MMCONNECT_API_KEYS":         "tooshort",
	} {
		env := map[string]string{"MMCONNECT_DATA_DIR": t.TempDir(), name: value}
		err := run(context.Background(), []string{"serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%s: err = %v, want one line naming %s", name, value, err, name)
		}
	}
}

func TestVersionAndHealthcheck(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "mmconnect ") {
		t.Fatalf("version: %q, %v", out.String(), err)
	}
	if err := run(context.Background(), []string{"frobnicate"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown command accepted")
	}

	mm := mattermosttest.NewServer(t)
	in := start(t, newEnv(t, mm))
	addr := strings.TrimPrefix(in.base, "http://")
	port := addr[strings.LastIndex(addr, ":")+1:]
	hc := func(port string) error {
		env := map[string]string{"MMCONNECT_ADDR": ":" + port}
		return run(context.Background(), []string{"healthcheck"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	if err := hc(port); err != nil {
		t.Fatalf("healthcheck against a running server: %v", err)
	}
	in.stop()
	if err := hc(port); err == nil {
		t.Fatal("healthcheck passed with the server stopped")
	}
}

func TestConnectSessionThroughRun(t *testing.T) {
	mm := mattermosttest.NewServer(t)
	in := start(t, newEnv(t, mm))
	status, s, _ := in.call("POST", "/connect/sessions", map[string]any{"end_user_id": "u9"})
	if status != 201 {
		t.Fatalf("open session = %d %v", status, s)
	}
	port := in.base[strings.LastIndex(in.base, ":")+1:]
	if want := "http://localhost:" + port + "/connect#session=" + s["token"].(string); s["connect_url"] != want {
		t.Fatalf("connect_url = %v, want %s (the default public URL on the bound port)", s["connect_url"], want)
	}
	req, _ := http.NewRequest("GET", in.base+"/connect/session", nil)
	req.Header.Set("Authorization", "Bearer "+s["token"].(string))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /connect/session = %v %v", resp, err)
	}
	resp.Body.Close()
	if strings.Contains(in.logs.String(), s["token"].(string)) {
		t.Fatal("the session token is in the logs")
	}
}

func TestClearTextPublicURLWarns(t *testing.T) {
	mm := mattermosttest.NewServer(t)
	env := newEnv(t, mm)
	env["MMCONNECT_PUBLIC_URL"] = "http://connect.example.com"
	in := start(t, env)
	if !strings.Contains(in.logs.String(), `"level":"WARN","msg":"MMCONNECT_PUBLIC_URL is plain http://`) {
		t.Fatalf("no warning for a clear-text public URL:\n%s", in.logs.String())
	}
}

// Both listeners bound every wait: a client that stops sending or reading
// midway, or keeps an idle connection open, is let go. The metrics
// listener had only a bound on reading headers, so a scraper's kept-alive
// connection, or one that never read its answer, was held for good.
func TestListenersBoundEveryWait(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name  string
		write time.Duration
	}{
		{"API", 30 * time.Second},
		{"metrics", metricsWriteTimeout},
	} {
		srv := httpServer(http.NotFoundHandler(), tc.write, log)
		waits := map[string]time.Duration{"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
			"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout}
		for name, d := range waits {
			if d <= 0 {
				t.Errorf("%s listener: %s = %v, want a bound", tc.name, name, d)
			}
		}
		if srv.WriteTimeout != tc.write || srv.MaxHeaderBytes != api.HardMaxHeaderBytes || srv.ErrorLog == nil {
			t.Errorf("%s listener: WriteTimeout %v (want %v), MaxHeaderBytes %d, ErrorLog set %v", tc.name, srv.WriteTimeout, tc.write, srv.MaxHeaderBytes, srv.ErrorLog != nil)
		}
	}
}

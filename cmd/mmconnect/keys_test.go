package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/logtest"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
	"github.com/mmconnect/mmconnect/internal/secret"
)

// startFails runs the program and returns the error it stops with before
// listening.
func startFails(t *testing.T, env map[string]string) string {
	t.Helper()
	logs := &logtest.Buffer{}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, logs)
	if err == nil {
		t.Fatal("the program started; want it to refuse")
	}
	if strings.Contains(logs.String(), `"msg":"listening"`) {
		t.Fatal("the program listened before refusing")
	}
	return err.Error()
}

// Keys cannot be lost silently: a missing key file is not replaced while
// connections are stored, a wrong key stops the start naming the key id it
// lacks, the database's files are private from the first start, and
// rotate-keys moves every token to a new key so the old one can go.
func TestKeysCannotBeLostSilently(t *testing.T) {
	mm := newMattermost(t)
	env := newEnv(t, mm)
	dir := env["MMCONNECT_DATA_DIR"]
	os.Chmod(dir, 0o755) // a data dir that an operator made readable
	in := start(t, env)
	status, c, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "u1"})
	if status != 201 {
		t.Fatalf("create = %d %v", status, c)
	}
	id := c["id"].(string)
	// From the first start, while serving: the data dir and the database's
	// files (-wal and -shm included) are private.
	for _, f := range []string{"", "mmconnect.db", "mmconnect.db-wal", "mmconnect.db-shm"} {
		st, err := os.Stat(filepath.Join(dir, f))
		want := os.FileMode(0o600)
		if f == "" {
			want = 0o700
		}
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", filepath.Join(dir, f), st.Mode().Perm(), err, want)
		}
	}
	in.stop()

	keyFile := filepath.Join(dir, "encryption-key")
	original, _ := os.ReadFile(keyFile)
	origKey, _ := secret.ParseKey(string(original))

	// The key file deleted: no new key while connections are stored.
	os.Remove(keyFile)
	if msg := startFails(t, env); !strings.Contains(msg, "is missing but the database holds connections") {
		t.Fatalf("start without the key file: %s", msg)
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Fatal("a new key file was generated over stored connections")
	}
	// Another valid key in the file: refused, naming the key id it lacks.
	os.WriteFile(keyFile, []byte(secret.NewEncryptionKey()+"\n"), 0o600)
	if msg := startFails(t, env); !strings.Contains(msg, secret.KeyID(origKey)) || strings.Contains(msg, "\n") {
		t.Fatalf("start with the wrong key: %q; want one line naming %s", msg, secret.KeyID(origKey))
	}
	// Both forms of the key setting at once: refused.
	both := cloneEnv(env)
	both["MMCONNECT_ENCRYPTION_KEY"], both["MMCONNECT_ENCRYPTION_KEYS"] = string(original), string(original)
	if msg := startFails(t, both); !strings.Contains(msg, "not both") {
		t.Fatalf("both key settings: %s", msg)
	}

	// Rotation: serve with the new key first and the old one after, rotate
	// while serving, then retire the old key.
	newKey := secret.NewEncryptionKey()
	rotating := cloneEnv(env)
	rotating["MMCONNECT_ENCRYPTION_KEYS"] = newKey + "," + strings.TrimSpace(string(original))
	serving := start(t, rotating)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"rotate-keys"}, func(k string) string { return rotating[k] }, &out, io.Discard); err != nil {
		t.Fatalf("rotate-keys: %v", err)
	}
	nk, _ := secret.ParseKey(newKey)
	report := out.String()
	if !strings.Contains(report, "re-sealed 1 value(s) under key id "+secret.KeyID(nk)) ||
		!strings.Contains(report, "key id "+secret.KeyID(origKey)+" seals nothing: it can be retired") {
		t.Fatalf("rotate-keys report:\n%s", report)
	}
	if status, cred, _ := serving.call("GET", "/connections/"+id+"/credentials", nil); status != 200 || cred["token"] != tokenA {
		t.Fatalf("credentials while rotating = %d", status)
	}
	serving.stop()
	retired := cloneEnv(env)
	retired["MMCONNECT_ENCRYPTION_KEYS"] = newKey
	after := start(t, retired)
	if status, cred, _ := after.call("GET", "/connections/"+id+"/credentials", nil); status != 200 || cred["token"] != tokenA {
		t.Fatalf("credentials with only the new key = %d", status)
	}
}

func cloneEnv(env map[string]string) map[string]string {
	out := make(map[string]string, len(env))
	for k, v := range env {
		out[k] = v
	}
	return out
}

// Edges a real HTTP server shows: HEAD wherever GET, the header limit as a
// problem, and what Go answers in plain text before the API sees it.
func TestEdgesOfTheRealServer(t *testing.T) {
	mm := mattermosttest.NewServer(t)
	in := start(t, newEnv(t, mm))
	send := func(method, path string, header map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, in.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+in.key)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, p := range []string{"/healthz", "/readyz", "/connections", "/openapi.yaml", "/connect"} {
		resp, body := send("HEAD", p, nil)
		if resp.StatusCode != 200 || body != "" {
			t.Errorf("HEAD %s = %d with %d body bytes; want 200 and none", p, resp.StatusCode, len(body))
		}
	}
	resp, body := send("GET", "/connections", map[string]string{"X-Padding": strings.Repeat("a", 40<<10)})
	if resp.StatusCode != 431 || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, `"code":"headers_too_large"`) {
		t.Errorf("headers over 32 KiB = %d %s %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, _ = send("GET", "/connections", map[string]string{"X-Padding": strings.Repeat("a", 2<<20)})
	if resp.StatusCode != 431 {
		t.Errorf("headers over 1 MiB = %d; want Go's own 431", resp.StatusCode)
	}

	// The proxy, wired in the real program: the stored token reaches
	// Mattermost's users/me.
	mm.AddToken(tokenA, alice())
	status, c, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA})
	if status != 201 {
		t.Fatalf("create = %d", status)
	}
	resp, body = send("GET", "/connections/"+c["id"].(string)+"/proxy/api/v4/users/me", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Mmconnect-Upstream") != "true" || !strings.Contains(body, `"username":"alice"`) {
		t.Fatalf("proxied users/me = %d %v %.200s", resp.StatusCode, resp.Header, body)
	}
}

// Operators can see it: /metrics behind its token (or an API key), or on
// a listener of its own.
func TestMetrics(t *testing.T) {
	mm := newMattermost(t)
	env := newEnv(t, mm)
	env["MMCONNECT_METRICS_TOKEN"] = "metrics-token-0123456789"
	in := start(t, env)
	status, created, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA})
	if status != 201 {
		t.Fatalf("create = %d", status)
	}
	// Read twice with nothing written between: the second is a row-cache hit.
	for range 2 {
		if status, _, _ := in.call("GET", "/connections/"+created["id"].(string), nil); status != 200 {
			t.Fatalf("get = %d", status)
		}
	}
	scrape := func(base, token string) (int, string) { return scrapeMetrics(t, base, token) }
	if status, _ := scrape(in.base, ""); status != 401 {
		t.Fatalf("metrics without the token = %d", status)
	}
	if status, _ := scrape(in.base, in.key); status != 401 {
		t.Fatalf("metrics with an API key while a metrics token is set = %d", status)
	}
	status, body := scrape(in.base, env["MMCONNECT_METRICS_TOKEN"])
	for _, want := range []string{
		`mmconnect_http_request_duration_seconds_count{method="POST",route="/connections",status="201",upstream="false"} 1`,
		`mmconnect_upstream_check_duration_seconds_count{outcome="accepted"} 1`,
		`mmconnect_connections{status="active"}`,
		`go_sql_open_connections{db_name="mmconnect"}`,
		`go_sql_open_connections{db_name="mmconnect_read"}`,
		`mmconnect_db_write_batch_busy_seconds_total`,
		`go_goroutines`,
		`mmconnect_build_info{version="` + buildVersion() + `"} 1`,
	} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics (%d) lack %s", status, want)
		}
	}
	// The create (the connection with its audit row, one transaction) went
	// through the group commit.
	counter := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("metrics lack %s", name)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	if w, b := counter("mmconnect_db_batched_writes_total"), counter("mmconnect_db_write_batches_total"); w < 1 || b < 1 || b > w {
		t.Errorf("group commit counted %v writes in %v batches", w, b)
	}
	if hits := counter(`mmconnect_db_row_cache_reads_total\{cache="connection",result="hit"\}`); hits < 1 {
		t.Errorf("row cache counted %v hits after a second read with nothing written", hits)
	}
	for _, c := range []string{`cache="connection",result="miss"`, `cache="connection",result="stale"`,
		`cache="page",result="hit"`, `cache="page",result="miss"`, `cache="page",result="stale"`} {
		counter(`mmconnect_db_row_cache_reads_total\{` + c + `\}`)
	}
	// Every outcome a check can have, and every rate limit in force (the
	// default limits), is a series before it first happens: 0, not absent.
	// Webhooks are off, so their deliveries are no series.
	for _, o := range connection.CheckOutcomes() {
		n := counter(`mmconnect_upstream_check_duration_seconds_count\{outcome="` + o + `"\}`)
		if want := map[bool]float64{true: 1}[o == "accepted"]; n != want {
			t.Errorf("%s checks = %v, want %v", o, n, want)
		}
	}
	for _, l := range []string{"api_key", "session", "ip"} {
		if n := counter(`mmconnect_rate_limited_total\{limit="` + l + `"\}`); n != 0 {
			t.Errorf("%s refusals = %v", l, n)
		}
	}
	if strings.Contains(body, "mmconnect_webhook_delivery_attempts_total{") {
		t.Error("webhook deliveries counted with webhooks off")
	}
	if lost := counter("mmconnect_log_lines_lost_total"); lost != 0 {
		t.Errorf("%v log lines lost writing to a buffer that never fails", lost)
	}
	if strings.Contains(body, tokenA) || strings.Contains(body, in.key) {
		t.Fatal("a secret is in the metrics")
	}
	in.stop()

	// On a listener of its own: the API does not serve it.
	env2 := newEnv(t, mm)
	env2["MMCONNECT_METRICS_ADDR"] = "127.0.0.1:0"
	own := start(t, env2)
	if status, _ := scrape(own.base, own.key); status != 404 {
		t.Fatalf("/metrics on the API listener with MMCONNECT_METRICS_ADDR = %d", status)
	}
	if status, body := scrape(metricsBase(t, own), ""); status != 200 || !strings.Contains(body, "mmconnect_http_request_duration_seconds") {
		t.Fatalf("metrics listener = %d", status)
	}
	if strings.Contains(own.logs.String(), "serves /metrics without a token") {
		t.Error("warned of open metrics on a loopback address")
	}
	// It serves /metrics alone, answering anything else as the API does.
	if resp, _ := getMetrics(t, metricsBase(t, own)+"/connections", ""); resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("metrics listener's /connections = %d %s, want the API's problem+json 404", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// There, behind its token when one is set, checked as on the API's
	// listener; open to other machines without one, with a warning.
	env4 := newEnv(t, mm)
	env4["MMCONNECT_METRICS_ADDR"], env4["MMCONNECT_METRICS_TOKEN"] = "0.0.0.0:0", "metrics-token-0123456789"
	guarded := start(t, env4)
	base := metricsBase(t, guarded)
	for _, tc := range []struct {
		auth   string
		status int
	}{
		{"", 401},
		{"Bearer " + guarded.key, 401},
		{"Bearer metrics-token-0123456789x", 401},
		{"Bearer " + env4["MMCONNECT_METRICS_TOKEN"], 200},
		{"bearer " + env4["MMCONNECT_METRICS_TOKEN"], 200},
	} {
		resp, _ := getMetrics(t, base+"/metrics", tc.auth)
		if resp.StatusCode != tc.status {
			t.Errorf("metrics listener with %q = %d, want %d", tc.auth, resp.StatusCode, tc.status)
		}
		if tc.status == 401 && (resp.Header.Get("Content-Type") != "application/problem+json" || resp.Header.Get("WWW-Authenticate") == "") {
			t.Errorf("metrics listener's 401 = %v, want the API's problem+json with WWW-Authenticate", resp.Header)
		}
	}
	if strings.Contains(guarded.logs.String(), "serves /metrics without a token") {
		t.Error("warned of open metrics behind a token")
	}
	guarded.stop()
	delete(env4, "MMCONNECT_METRICS_TOKEN")
	if open := start(t, env4); !strings.Contains(open.logs.String(), "serves /metrics without a token") {
		t.Error("no warning of metrics open on every interface without a token")
	}

	// A metrics address that cannot be had stops the start before the API
	// says it listens, and frees the API's port.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := apiLn.Addr().String()
	apiLn.Close()
	env3 := newEnv(t, mm)
	env3["MMCONNECT_ADDR"], env3["MMCONNECT_METRICS_ADDR"] = apiAddr, busy.Addr().String()
	if msg := startFails(t, env3); !strings.Contains(msg, "listen for metrics on "+busy.Addr().String()) {
		t.Fatalf("start with a busy metrics address = %q", msg)
	}
	again, err := net.Listen("tcp", apiAddr)
	if err != nil {
		t.Fatalf("the API's port is still held after the refused start: %v", err)
	}
	again.Close()
}

// metricsPort reads the metrics listener's port from in's log.
var metricsPort = regexp.MustCompile(`"msg":"serving metrics","addr":"[^"]*:(\d+)"`)

// metricsBase is the URL of in's metrics listener, reached on loopback
// whatever address it listens on (all interfaces included).
func metricsBase(t *testing.T, in *instance) string {
	t.Helper()
	m := metricsPort.FindStringSubmatch(in.logs.String())
	if m == nil {
		t.Fatal("no metrics listener logged")
	}
	return "http://127.0.0.1:" + m[1]
}

// getMetrics GETs url with auth as the Authorization header (none when
// empty) and returns the answer, its body read and closed, and the body.
func getMetrics(t *testing.T, url, auth string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// scrapeMetrics GETs base's /metrics with token (none when empty) and
// returns the status and the body.
func scrapeMetrics(t *testing.T, base, token string) (int, string) {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	resp, body := getMetrics(t, base+"/metrics", auth)
	return resp.StatusCode, body
}

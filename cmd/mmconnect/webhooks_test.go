package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

const e2eWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hookReceiver is the app's endpoint: it verifies each delivery with the
// Standard Webhooks library and answers down (503) until told otherwise.
type hookReceiver struct {
	t  *testing.T
	wh *standardwebhooks.Webhook
	mu sync.Mutex
	up bool
	// refused counts deliveries answered 503 while down.
	refused int
	got     []map[string]any
	seen    map[string]int
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.t.Errorf("delivery does not verify: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up {
		r.refused++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var m map[string]any
	json.Unmarshal(body, &m)
	r.got = append(r.got, m)
	r.seen[req.Header.Get("webhook-id")]++
	w.WriteHeader(http.StatusNoContent)
}

// types lists the event types accepted so far.
func (r *hookReceiver) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.got {
		out = append(out, m["type"].(string))
	}
	return out
}

// waitFor polls until the receiver has accepted want, or fails.
func (r *hookReceiver) waitFor(want string, within time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Join(r.types(), ",") == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.t.Fatalf("receiver accepted %v; want %s within %s", r.types(), want, within)
}

// process is the test binary running the real program.
type process struct {
	cmd  *exec.Cmd
	base string
}

func startProcess(t *testing.T, env map[string]string) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MMCONNECT_TEST_RUN_MAIN=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	var logs strings.Builder
	var logsMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logsMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			logsMu.Unlock()
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		return &process{cmd: cmd, base: "http://" + a}
	case <-time.After(30 * time.Second):
		logsMu.Lock()
		defer logsMu.Unlock()
		t.Fatalf("the program did not start listening within 30s:\n%s", logs.String())
	}
	return nil
}

// A change acknowledged before the process is killed (SIGKILL) is
// delivered after a restart, once, signed; background re-checks and the
// upstream revoke run in the real program too.
func TestWebhookSurvivesKillAndRecheckRunsInBackground(t *testing.T) {
	mm := newMattermost(t)
	wh, err := standardwebhooks.NewWebhook(e2eWebhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	rcv := &hookReceiver{t: t, wh: wh, seen: map[string]int{}}
	hooks := httptest.NewServer(rcv)
	defer hooks.Close()

	env := newEnv(t, mm)
	env["MMCONNECT_API_KEYS"] = strings.Repeat("k", 40)
	env["MMCONNECT_WEBHOOK_URL"] = hooks.URL + "/mmconnect"
	env["MMCONNECT_WEBHOOK_SECRET"] = e2eWebhookSecret
	env["MMCONNECT_REVERIFY_INTERVAL"] = "10s"
	in := &instance{t: t, key: env["MMCONNECT_API_KEYS"]}

	first := startProcess(t, env)
	in.base = first.base
	status, c, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "u1"})
	if status != 201 {
		t.Fatalf("create = %d %v", status, c)
	}
	id := c["id"].(string)
	// The receiver is down: once a failed attempt is recorded, the event
	// is pending for a retry. Kill the process then. (Killed between the
	// receiver's refusal and the record, the event would stay leased to
	// the dead process for 30 s, the lease's length.)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		rcv.mu.Lock()
		refused := rcv.refused
		rcv.mu.Unlock()
		if refused > 0 {
			_, page, _ := in.call("GET", "/webhooks/deliveries?status=pending", nil)
			if data, _ := page["data"].([]any); len(data) == 1 && data[0].(map[string]any)["attempts"].(float64) >= 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no failed delivery attempt was recorded within 10s")
		}
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.cmd.Wait()
	if got := rcv.types(); len(got) != 0 {
		t.Fatalf("receiver accepted %v while down", got)
	}

	rcv.mu.Lock()
	rcv.up = true
	rcv.mu.Unlock()
	second := startProcess(t, env)
	in.base = second.base
	rcv.waitFor("connection.created", 20*time.Second)

	// Removed in Mattermost: the background re-check (every 10 s here)
	// finds it and the app hears of it.
	mm.RevokeToken(tokenA)
	rcv.waitFor("connection.created,connection.invalid", 30*time.Second)
	_, got, _ := in.call("GET", "/connections/"+id, nil)
	if got["status"] != "invalid" || got["invalid_since"] == nil {
		t.Fatalf("after the background re-check: %v", got)
	}

	mm.AddToken(tokenA, alice())
	rcv.waitFor("connection.created,connection.invalid,connection.recovered", 30*time.Second)
	if status, _, _ := in.call("DELETE", "/connections/"+id, nil); status != 204 {
		t.Fatalf("DELETE = %d", status)
	}
	rcv.waitFor("connection.created,connection.invalid,connection.recovered,connection.revoked", 10*time.Second)
	for id, n := range rcv.seen {
		if n != 1 {
			t.Errorf("event %s accepted %d times", id, n)
		}
	}
	_, got, _ = in.call("GET", "/connections/"+id, nil)
	if ur, _ := got["upstream_revocation"].(map[string]any); ur["status"] != "revoked" || mm.HasToken(tokenA) {
		t.Fatalf("upstream_revocation = %v; token still works %v", got["upstream_revocation"], mm.HasToken(tokenA))
	}
	// This process delivered every event at its first attempt: its
	// counts say so, with the outcomes it never had at 0, not absent.
	status, body := scrapeMetrics(t, in.base, in.key)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^mmconnect_webhook_delivery_attempts_total\{outcome="delivered"\} [1-9]`),
		regexp.MustCompile(`(?m)^mmconnect_webhook_delivery_attempts_total\{outcome="pending"\} 0$`),
		regexp.MustCompile(`(?m)^mmconnect_webhook_delivery_attempts_total\{outcome="failed"\} 0$`),
	} {
		if status != 200 || !want.MatchString(body) {
			t.Errorf("metrics (%d) lack %s", status, want)
		}
	}
}

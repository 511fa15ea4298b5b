package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// A report of wrk 4.2 (Debian's), as printed with --latency.
const wrkReport = `Running 5s test @ http://127.0.0.1:18081/connections/conn_222222222222222222222225ww
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.33ms    1.57ms  21.64ms   88.85%
    Req/Sec    15.97k     2.24k   21.59k    71.88%
  Latency Distribution
     50%  833.00us
     75%    1.70ms
     90%    3.07ms
     99%    7.52ms
  254612 requests in 8.01s, 83.77MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 12
Requests/sec:  31769.74
Transfer/sec:     10.45MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	if r.n != 254612-12 || r.errs != 12+6 || r.elapsed != 8010*time.Millisecond || r.p50 != 833*time.Microsecond || r.p99 != 7520*time.Microsecond {
		t.Errorf("parseWrk = n %d, errs %d, elapsed %s, p50 %s, p99 %s", r.n, r.errs, r.elapsed, r.p50, r.p99)
	}
	for _, cut := range []string{"requests in", "50%", "99%"} {
		var kept []string
		for _, l := range strings.Split(wrkReport, "\n") {
			if !strings.Contains(l, cut) {
				kept = append(kept, l)
			}
		}
		if _, err := parseWrk(strings.Join(kept, "\n")); err == nil {
			t.Errorf("a report without %q was read", cut)
		}
	}
}

// The script's requests are the Go client's: GETs of seeded ids only (so
// a random id is never a 404), and creates for distinct end users with
// the stand-in's tokens.
func TestWrkScriptRequests(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("wrk is not installed (CI must install it: apt-get install wrk)")
		}
		t.Skip("wrk is not installed")
	}
	const rows = 300
	seededIDs := map[string]bool{}
	for i := range rows {
		seededIDs["/connections/"+seeded{}.id(i)] = true
	}
	var mu sync.Mutex
	paths := map[string]int{}
	endUsers := map[string]int{}
	var bad []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer key" {
			bad = append(bad, "no API key on "+r.URL.Path)
		}
		switch r.Method {
		case http.MethodGet:
			paths[r.URL.Path]++
		case http.MethodPost:
			var body struct {
				ServerURL string `json:"server_url"`
				Token     string `json:"token"`
				EndUserID string `json:"end_user_id"`
			}
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ServerURL != "https://mm.example" ||
				r.Header.Get("Content-Type") != "application/json" || !tokenPattern(body.Token) {
				bad = append(bad, "a create of "+r.Header.Get("Content-Type")+" "+body.ServerURL+" "+body.Token)
			}
			endUsers[body.EndUserID]++
			w.WriteHeader(http.StatusCreated)
		}
	}))
	defer srv.Close()
	env := []string{"BENCH_KEY=key", "BENCH_ROWS=300", "BENCH_MM=https://mm.example", "BENCH_CREATORS=7", "BENCH_OFFSET=0"}
	for _, req := range []wrkRequest{{mode: "random"}, {mode: "create"}} {
		r, _, err := runWrk(t.TempDir(), req.mode, srv.URL, req, 4, time.Second, env)
		if err != nil {
			t.Fatal(err)
		}
		if r.n == 0 || r.errs != 0 {
			t.Errorf("%s: %d requests, %d errors", req.mode, r.n, r.errs)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range bad {
		t.Error(b)
	}
	if len(paths) < rows/2 {
		t.Errorf("random ids: only %d of %d seeded ids asked for", len(paths), rows)
	}
	for p := range paths {
		if !seededIDs[p] {
			t.Errorf("random ids: %s is no seeded id", p)
		}
	}
	for u, n := range endUsers {
		if n > 1 || !strings.HasPrefix(u, "bench-") {
			t.Errorf("creates: end user %q used %d times", u, n)
		}
	}
	if len(endUsers) == 0 {
		t.Error("no creates")
	}
}

// tokenPattern tells one of the stand-in's bench tokens (token(k), k <
// creators of the run).
func tokenPattern(tok string) bool {
	for k := range 7 {
		if tok == token(k) {
			return true
		}
	}
	return false
}

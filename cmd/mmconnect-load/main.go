// Command mmconnect-load is the load run behind `make load`: it starts the
// built mmconnect binary against a local TLS stand-in Mattermost, drives it
// with many concurrent clients mixing every kind of request, then kills it
// with SIGKILL, restarts it, and checks that nothing acknowledged was lost:
// every acknowledged create is there with its token, every acknowledged
// revoke is revoked, and no request got a 5xx. It exits non-zero otherwise.
//
//	mmconnect-load -bin ./mmconnect -clients 200 -duration 30s [-postgres URL]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
	"github.com/mmconnect/mmconnect/internal/process"
	"github.com/mmconnect/mmconnect/internal/secret"
)

func main() {
	bin := flag.String("bin", "./mmconnect", "the mmconnect binary")
	clients := flag.Int("clients", 200, "concurrent clients")
	duration := flag.Duration("duration", 30*time.Second, "how long to drive it")
	tokensPerClient := flag.Int("tokens", 4, "Mattermost accounts per client")
	postgres := flag.String("postgres", "", "run on the PostgreSQL at this URL instead of SQLite: an empty database, or a schema of its own (?search_path=…)")
	flag.Parse()
	if err := run(*bin, *clients, *tokensPerClient, *duration, *postgres); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// owned is what one client knows was acknowledged about a connection.
type owned struct {
	token   string
	revoked bool
}

type stats struct {
	mu        sync.Mutex
	latencies map[string][]time.Duration
	statuses  map[int]int
	errors    []string
}

func (s *stats) add(op string, status int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latencies[op] = append(s.latencies[op], d)
	s.statuses[status]++
}

func (s *stats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errors) < 50 {
		s.errors = append(s.errors, fmt.Sprintf(format, args...))
	}
}

func run(bin string, clients, tokensPerClient int, duration time.Duration, postgres string) error {
	mm := mattermosttest.Start()
	defer mm.Close()
	dir, err := os.MkdirTemp("", "mmconnect-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	caFile := filepath.Join(dir, "ca.pem")
	if err := mm.WriteCAFile(caFile); err != nil {
		return err
	}
	token := func(client, j int) string { return fmt.Sprintf("c%05dt%03d%s", client, j, strings.Repeat("a", 16)) }
	for c := range clients {
		for j := range tokensPerClient {
			mm.AddToken(token(c, j), mattermosttest.User{ID: fmt.Sprintf("u%05d%03d%s", c, j, strings.Repeat("b", 17)), Username: fmt.Sprintf("user%d-%d", c, j)})
		}
	}
	env := append(os.Environ(),
		"MMCONNECT_ADDR=127.0.0.1:0",
		"MMCONNECT_DATA_DIR="+filepath.Join(dir, "data"),
		"MMCONNECT_UPSTREAM_CA_FILE="+caFile,
		"MMCONNECT_ALLOWED_NETWORKS=127.0.0.0/8",
		"MMCONNECT_RATE_LIMITS=off",
		"MMCONNECT_UPSTREAM_HOST_CONCURRENCY=64",
		// Tokens are reused after a revoke; revoking them at the stand-in
		// would turn later creates into rejections.
		"MMCONNECT_REVOKE_UPSTREAM=false",
	)
	var key string
	if postgres != "" {
		// Replicas share their keys, so PostgreSQL wants them set, not
		// made in the data dir.
		key = secret.NewAPIKey()
		env = append(env, "MMCONNECT_DATABASE_URL="+postgres, "MMCONNECT_API_KEYS=load:"+key,
			"MMCONNECT_ENCRYPTION_KEY="+secret.NewEncryptionKey())
	}
	srv, base, err := process.Start(bin, env)
	if err != nil {
		return err
	}
	if key == "" {
		keyBytes, err := os.ReadFile(filepath.Join(dir, "data", "api-key"))
		if err != nil {
			return err
		}
		key = strings.TrimSpace(string(keyBytes))
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	call := func(method, path string, body any) (int, map[string]any, error) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+key)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &m)
		return resp.StatusCode, m, nil
	}

	st := &stats{latencies: map[string][]time.Duration{}, statuses: map[int]int{}}
	acked := make([]map[string]*owned, clients)
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	began := time.Now()
	for c := range clients {
		acked[c] = map[string]*owned{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := acked[c]
			endUser := fmt.Sprintf("load-%d", c)
			r := rand.New(rand.NewPCG(uint64(c), 7))
			ids := func() []string {
				out := make([]string, 0, len(mine))
				for id := range mine {
					out = append(out, id)
				}
				slices.Sort(out)
				return out
			}
			for ctx.Err() == nil {
				known := ids()
				op := "create"
				if len(known) > 0 {
					op = []string{"create", "get", "get", "list", "verify", "credentials", "delete"}[r.IntN(7)]
				}
				var id string
				if len(known) > 0 {
					id = known[r.IntN(len(known))]
				}
				t0 := time.Now()
				var status int
				var body map[string]any
				var err error
				switch op {
				case "create":
					tok := token(c, r.IntN(tokensPerClient))
					status, body, err = call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tok, "end_user_id": endUser})
					if err == nil && (status == 200 || status == 201) {
						mine[body["id"].(string)] = &owned{token: tok}
					}
				case "get":
					status, _, err = call("GET", "/connections/"+id, nil)
				case "list":
					status, _, err = call("GET", "/connections?end_user_id="+endUser+"&limit=50", nil)
				case "verify":
					status, _, err = call("POST", "/connections/"+id+"/verify", nil)
				case "credentials":
					status, body, err = call("GET", "/connections/"+id+"/credentials", nil)
					if err == nil && status == 200 && body["token"] != mine[id].token {
						st.fail("credentials of %s: another token", id)
					}
				case "delete":
					status, _, err = call("DELETE", "/connections/"+id, nil)
					if err == nil && status == 204 {
						mine[id].revoked = true
					}
				}
				if err != nil {
					if ctx.Err() == nil {
						st.fail("%s: %v", op, err)
					}
					continue
				}
				st.add(op, status, time.Since(t0))
				if status >= 500 {
					st.fail("%s %s: %d", op, id, status)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)

	// Kill it the hard way, then start it again on the same data.
	if err := process.Kill(srv); err != nil {
		return err
	}
	srv, base, err = process.Start(bin, env)
	if err != nil {
		return fmt.Errorf("restart after SIGKILL: %w", err)
	}
	defer process.Stop(srv)
	checked, lost := 0, 0
	for _, mine := range acked {
		for id, o := range mine {
			checked++
			status, got, err := call("GET", "/connections/"+id, nil)
			switch {
			case err != nil || status != 200:
				lost++
				st.fail("after restart, %s: %d %v", id, status, err)
			case o.revoked && got["status"] != "revoked":
				lost++
				st.fail("after restart, %s was acknowledged revoked but is %v", id, got["status"])
			case !o.revoked && got["status"] != "revoked":
				status, cred, err := call("GET", "/connections/"+id+"/credentials", nil)
				if err != nil || status != 200 || cred["token"] != o.token {
					lost++
					st.fail("after restart, the token of %s does not open: %d %v", id, status, err)
				}
			}
		}
	}

	report(st, elapsed, clients, checked)
	fivexx := 0
	for s, n := range st.statuses {
		if s >= 500 {
			fivexx += n
		}
	}
	if fivexx > 0 || lost > 0 || len(st.errors) > 0 {
		for _, e := range st.errors {
			fmt.Fprintln(os.Stderr, "  ", e)
		}
		return fmt.Errorf("%d 5xx answers, %d acknowledged writes lost or wrong", fivexx, lost)
	}
	fmt.Println("PASS: zero 5xx, every acknowledged write present after SIGKILL, every token opens")
	return nil
}

func report(st *stats, elapsed time.Duration, clients, checked int) {
	total := 0
	fmt.Printf("%d clients for %s\n", clients, elapsed.Round(time.Millisecond))
	fmt.Printf("%-12s %8s %8s %8s %8s\n", "op", "count", "req/s", "p50", "p99")
	ops := make([]string, 0, len(st.latencies))
	for op := range st.latencies {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	for _, op := range ops {
		l := st.latencies[op]
		slices.Sort(l)
		total += len(l)
		fmt.Printf("%-12s %8d %8.0f %8s %8s\n", op, len(l), float64(len(l))/elapsed.Seconds(),
			l[len(l)/2].Round(10*time.Microsecond), l[len(l)*99/100].Round(10*time.Microsecond))
	}
	fmt.Printf("%-12s %8d %8.0f\n", "all", total, float64(total)/elapsed.Seconds())
	statuses := make([]int, 0, len(st.statuses))
	for s := range st.statuses {
		statuses = append(statuses, s)
	}
	slices.Sort(statuses)
	fmt.Print("statuses:")
	for _, s := range statuses {
		fmt.Printf(" %d×%d", s, st.statuses[s])
	}
	fmt.Printf("\nchecked %d acknowledged connections after SIGKILL and restart\n", checked)
}

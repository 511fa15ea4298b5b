// Command mmconnect-bench is the load run behind `make bench`: it measures
// the built mmconnect binary over real HTTP, against a loopback TLS
// stand-in Mattermost, beside a bare Echo handler measured in the same run
// (the ceiling), and reports req/s and p50/p99 for get, list and create,
// the server's peak RSS and the upstream TLS handshakes.
//
//	mmconnect-bench -bin ./mmconnect [-seed 1000000] [-duration 10s]
//
// With -seed N it first fills the database with N connections, written
// straight into SQLite in large transactions, so scale figures take
// seconds to set up rather than hours.
package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	_ "github.com/mattn/go-sqlite3"

	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
	"github.com/mmconnect/mmconnect/internal/process"
	"github.com/mmconnect/mmconnect/internal/secret"
)

func main() {
	bin := flag.String("bin", "./mmconnect", "the mmconnect binary")
	seed := flag.Int("seed", 1000, "connections stored before measuring")
	duration := flag.Duration("duration", 10*time.Second, "how long each measurement runs")
	readers := flag.Int("clients", 32, "concurrent clients")
	flag.Parse()
	if err := run(*bin, *seed, *readers, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name     string
	n        int
	errs     int64
	elapsed  time.Duration
	p50, p99 time.Duration
}

// load runs clients that call do in a loop for d and times each call.
func load(name string, clients int, d time.Duration, do func(client, i int) error) result {
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1<<14)
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				if err := do(c, i); err != nil {
					errs.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := result{name: name, n: len(lat), errs: errs.Load(), elapsed: time.Since(start)}
	if len(lat) > 0 {
		slices.Sort(lat)
		r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return r
}

func run(bin string, seed, clients int, d time.Duration) error {
	mm := mattermosttest.Start()
	defer mm.Close()
	dir, err := os.MkdirTemp("", "mmconnect-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	caFile := filepath.Join(dir, "ca.pem")
	if err := mm.WriteCAFile(caFile); err != nil {
		return err
	}
	const creators = 1 << 16
	token := func(i int) string { return fmt.Sprintf("b%09d%s", i, strings.Repeat("a", 16)) }
	for i := range creators {
		mm.AddToken(token(i), mattermosttest.User{ID: fmt.Sprintf("u%09d%s", i, strings.Repeat("b", 16)), Username: fmt.Sprintf("user%d", i)})
	}
	apiKey := secret.NewAPIKey()
	encKey := secret.NewEncryptionKey()
	dbPath := filepath.Join(dir, "data", "mmconnect.db")
	env := append(os.Environ(),
		"MMCONNECT_ADDR=127.0.0.1:0",
		"MMCONNECT_DATA_DIR="+filepath.Join(dir, "data"),
		"MMCONNECT_API_KEYS=bench:"+apiKey,
		"MMCONNECT_ENCRYPTION_KEY="+encKey,
		"MMCONNECT_UPSTREAM_CA_FILE="+caFile,
		"MMCONNECT_ALLOWED_NETWORKS=127.0.0.0/8",
		"MMCONNECT_RATE_LIMITS=off",
		"MMCONNECT_UPSTREAM_HOST_CONCURRENCY=64",
		"MMCONNECT_REVERIFY_INTERVAL=0",
		"MMCONNECT_MAX_CONNECTIONS_PER_END_USER=100000",
	)
	// Start once to create the schema, then seed while it is stopped.
	srv, base, err := process.Start(bin, env)
	if err != nil {
		return err
	}
	process.Stop(srv)
	t0 := time.Now()
	firstID, err := seedDB(dbPath, encKey, seed)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	fmt.Printf("seeded %d connections in %s\n", seed, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	srv, base, err = process.Start(bin, env)
	if err != nil {
		return err
	}
	fmt.Printf("start to listening with %d connections: %s\n", seed, time.Since(t0).Round(time.Millisecond))
	defer process.Stop(srv)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2, MaxIdleConns: clients * 2}}
	get := func(url string, want int) error {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("%s: %d", url, resp.StatusCode)
		}
		return nil
	}

	// The ceiling: a bare Echo handler answering a connection-shaped object.
	bare, bareURL, err := bareEcho()
	if err != nil {
		return err
	}
	defer bare.Close()

	results := []result{
		load("bare Echo handler", clients, d, func(int, int) error { return get(bareURL, 200) }),
		load("GET /connections/{id}", clients, d, func(int, int) error { return get(base+"/connections/"+firstID, 200) }),
		load("GET /connections?limit=50", clients, d, func(int, int) error { return get(base+"/connections?limit=50", 200) }),
	}
	handshakes := mm.Connections()
	batchesBefore := scrape(client, base, apiKey)
	var created atomic.Int64
	results = append(results, load("POST /connections", clients, d, func(c, i int) error {
		n := int(created.Add(1))
		body, _ := json.Marshal(map[string]any{"server_url": mm.URL, "token": token(n % creators), "end_user_id": fmt.Sprintf("bench-%d-%d", c, i)})
		req, _ := http.NewRequest("POST", base+"/connections", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			return fmt.Errorf("create: %d", resp.StatusCode)
		}
		return nil
	}))
	handshakes = mm.Connections() - handshakes
	batchesAfter := scrape(client, base, apiKey)

	ceiling := float64(results[0].n) / results[0].elapsed.Seconds()
	fmt.Printf("\n%d clients, %s each, %d connections stored\n", clients, d, seed)
	fmt.Printf("%-28s %9s %8s %10s %10s %6s\n", "", "req/s", "× bare", "p50", "p99", "errors")
	for _, r := range results {
		rps := float64(r.n) / r.elapsed.Seconds()
		fmt.Printf("%-28s %9.0f %8.2f %10s %10s %6d\n", r.name, rps, rps/ceiling, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.errs)
	}
	fmt.Printf("upstream TLS handshakes during the creates: %d\n", handshakes)
	if b := batchesAfter["mmconnect_db_write_batches_total"] - batchesBefore["mmconnect_db_write_batches_total"]; b > 0 {
		w := batchesAfter["mmconnect_db_batched_writes_total"] - batchesBefore["mmconnect_db_batched_writes_total"]
		busy := batchesAfter["mmconnect_db_write_batch_busy_seconds_total"] - batchesBefore["mmconnect_db_write_batch_busy_seconds_total"]
		fmt.Printf("SQLite group commit during the creates: %.0f batches, %.1f writes each, writer busy %.0f%% of the run\n",
			b, w/b, 100*busy/results[len(results)-1].elapsed.Seconds())
	}
	fmt.Printf("server peak RSS: %.1f MiB\n", float64(process.PeakRSS(srv.Process.Pid))/(1<<20))
	return nil
}

// scrape reads the server's unlabelled counters from /metrics.
func scrape(client *http.Client, base, apiKey string) map[string]float64 {
	out := map[string]float64{}
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := client.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		var name string
		var v float64
		if n, _ := fmt.Sscanf(line, "%s %g", &name, &v); n == 2 && !strings.HasPrefix(name, "#") {
			out[name] = v
		}
	}
	return out
}

// seedDB writes n active connections straight into the SQLite file, their
// tokens sealed like the server's, in transactions of 10,000 rows. It
// returns the id of one of them.
func seedDB(path, encKey string, n int) (string, error) {
	key, err := secret.ParseKey(encKey)
	if err != nil {
		return "", err
	}
	sealer, err := secret.NewSealer(key)
	if err != nil {
		return "", err
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=OFF&_busy_timeout=5000")
	if err != nil {
		return "", err
	}
	defer db.Close()
	now := time.Now().UnixMicro()
	first := ""
	for done := 0; done < n; {
		tx, err := db.Begin()
		if err != nil {
			return "", err
		}
		stmt, err := tx.Prepare(`INSERT INTO connections (id, server_url, end_user_id, status, mattermost_user_id, mattermost_username,
			mattermost_email, server_version, token_hint, sealed_token, generation, created_at, updated_at, last_verified_at,
			last_checked_at, next_check_at) VALUES (?, 'https://seed.example.com', ?, 'active', ?, 'seed', 'seed@example.com', '11.4.0', 'aaaa', ?, 1, ?, ?, ?, ?, ?)`)
		if err != nil {
			return "", err
		}
		for end := min(done+10000, n); done < end; done++ {
			id := fmt.Sprintf("conn_%026d", done)
			if first == "" {
				first = id
			}
			sealed, err := sealer.Seal([]byte(fmt.Sprintf("s%025d", done)), []byte(id))
			if err != nil {
				return "", err
			}
			at := now - int64(n-done)
			if _, err := stmt.Exec(id, fmt.Sprintf("seed-end-%d", done), fmt.Sprintf("s%025d", done), string(sealed), at, at, at, at, at); err != nil {
				return "", err
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return "", err
		}
	}
	if _, err := db.Exec("INSERT INTO sealing_keys (key_id) VALUES (?) ON CONFLICT (key_id) DO NOTHING", secret.KeyID(key)); err != nil {
		return "", err
	}
	_, err = db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return first, err
}

// bareEcho serves one connection-shaped JSON object with Echo.
func bareEcho() (*http.Server, string, error) {
	e := echo.New()
	body := map[string]any{"id": "conn_" + base64.RawURLEncoding.EncodeToString(make([]byte, 16)), "provider": "mattermost",
		"server_url": "https://mm.example.com", "end_user_id": "u1", "status": "active",
		"mattermost_user": map[string]any{"id": strings.Repeat("a", 26), "username": "alice", "email": "alice@example.com", "is_bot": false},
		"server_version":  "11.4.0", "token_hint": "wxyz", "created_at": "2026-11-27T00:00:00.000000Z", "updated_at": "2026-11-27T00:00:00.000000Z",
		"last_verified_at": "2026-11-27T00:00:00.000000Z", "last_checked_at": nil, "invalid_since": nil, "revoked_at": nil, "last_error": nil, "upstream_revocation": nil}
	e.GET("/x", func(c echo.Context) error { return c.JSON(200, body) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: e}
	go srv.Serve(ln)
	return srv, "http://" + ln.Addr().String() + "/x", nil
}

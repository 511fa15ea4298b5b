// Command mmconnect-bench is the load run behind `make bench`: it measures
// the built mmconnect binary over real HTTP, against a loopback TLS
// stand-in Mattermost, beside a bare Echo handler measured in the same run
// (the ceiling), and reports req/s and p50/p99 for get, list and create,
// the server's peak RSS and the upstream TLS handshakes.
//
//	mmconnect-bench -bin ./mmconnect [-seeds 1000,1000000] [-duration 10s] [-postgres URL [-postgres-delay 500us]] [-load go|wrk]
//	mmconnect-bench -bin ./mmconnect -seed 1000000 [-data-dir ./data | -postgres URL]
//
// Each size in -seeds is a round: the database is filled with that many
// connections (written straight into SQLite in large transactions, or
// with COPY into PostgreSQL, so a million takes seconds rather than
// hours), the binary is started on it and everything is measured; with
// several sizes, the last is compared with the first, in the same run.
package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	_ "github.com/mattn/go-sqlite3"

	"github.com/mmconnect/mmconnect/internal/config"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
	"github.com/mmconnect/mmconnect/internal/process"
	"github.com/mmconnect/mmconnect/internal/secret"
)

func main() {
	bin := flag.String("bin", "./mmconnect", "the mmconnect binary")
	seeds := flag.String("seeds", "1000", "comma-separated: connections stored before each round of measurements (e.g. 1000,1000000)")
	duration := flag.Duration("duration", 10*time.Second, "how long each measurement runs")
	clients := flag.Int("clients", 32, "concurrent clients")
	loadGen := flag.String("load", "go", "the load generator: go (this process's HTTP client) or wrk (the wrk command, which takes less of the machine)")
	postgres := flag.String("postgres", "", "measure on PostgreSQL at this URL (a schema of its own is made and dropped) instead of SQLite; with -seed, the database to fill")
	pgDelay := flag.Duration("postgres-delay", 0, "with -postgres: put the database behind a proxy that holds every packet this long each way, as if it were a network away (the round trip it makes is measured and printed)")
	seed := flag.Int("seed", 0, "only fill a database with this many connections (-data-dir's SQLite, or -postgres) and exit")
	dataDir := flag.String("data-dir", "./data", "with -seed: the MMCONNECT_DATA_DIR whose SQLite database (and key) to use")
	flag.Parse()
	if *seed > 0 {
		if err := seedOnly(*bin, *seed, *dataDir, *postgres); err != nil {
			fmt.Fprintln(os.Stderr, "bench: seed:", err)
			os.Exit(1)
		}
		return
	}
	var sizes []int
	for _, f := range strings.Split(*seeds, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -seeds: %q is not a positive number\n", f)
			os.Exit(2)
		}
		sizes = append(sizes, n)
	}
	if *loadGen != "go" && *loadGen != "wrk" {
		fmt.Fprintf(os.Stderr, "bench: -load: %q is neither go nor wrk\n", *loadGen)
		os.Exit(2)
	}
	if *pgDelay > 0 && *postgres == "" {
		fmt.Fprintln(os.Stderr, "bench: -postgres-delay needs -postgres")
		os.Exit(2)
	}
	if err := run(*bin, sizes, *clients, *duration, *postgres, *pgDelay, *loadGen); err != nil {
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
	cpu      cpuUse
}

// cpuUse is where the machine's processor time went during a measurement:
// the server, this process (the load generator, the stand-in Mattermost
// and the bare handler) and everything else (PostgreSQL, other work).
type cpuUse struct{ server, bench, rest time.Duration }

// cpuSnapshot reads the processor time used so far.
func cpuSnapshot(serverPid int) cpuUse {
	srv, self := process.CPU(serverPid), process.CPU(os.Getpid())
	return cpuUse{server: srv, bench: self, rest: process.MachineBusy() - srv - self}
}

func (c cpuUse) since(before cpuUse) cpuUse {
	return cpuUse{server: c.server - before.server, bench: c.bench - before.bench, rest: c.rest - before.rest}
}

// perRequest prints d spread over the result's requests.
func (r result) perRequest(d time.Duration) string {
	if r.n == 0 {
		return "-"
	}
	return (d / time.Duration(r.n)).Round(time.Microsecond).String()
}

func (r result) rps() float64 { return float64(r.n) / r.elapsed.Seconds() }

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

// bench is what every round shares: the stand-in Mattermost with its
// accounts, the keys, the client and the ceiling.
type bench struct {
	bin      string
	clients  int
	d        time.Duration
	postgres string
	pgProxy  string // with -postgres-delay: the delaying proxy's host:port
	load     string // the load generator: "go" or "wrk"
	mm       *mattermosttest.Server
	caFile   string
	apiKey   string
	encKey   string // the server's key, as MMCONNECT_ENCRYPTION_KEY says it
	key      []byte // and decoded, for the seeders
	client   *http.Client
	bareURL  string
	created  atomic.Int64
}

// creators is how many stand-in accounts the creates cycle through.
const creators = 1 << 16

// created201 is the server's count of creates answered 201, in /metrics.
const created201 = `mmconnect_http_request_duration_seconds_count{method="POST",route="/connections",status="201",upstream="false"}`

func token(i int) string { return fmt.Sprintf("b%09d%s", i, strings.Repeat("a", 16)) }

func run(bin string, sizes []int, clients int, d time.Duration, postgres string, pgDelay time.Duration, loadGen string) error {
	mm := mattermosttest.Start()
	defer mm.Close()
	dir, err := os.MkdirTemp("", "mmconnect-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{bin: bin, clients: clients, d: d, postgres: postgres, load: loadGen, mm: mm, caFile: filepath.Join(dir, "ca.pem"),
		apiKey: secret.NewAPIKey(), encKey: secret.NewEncryptionKey(),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2, MaxIdleConns: clients * 2}}}
	if b.key, err = secret.ParseKey(b.encKey); err != nil {
		return err
	}
	if err := mm.WriteCAFile(b.caFile); err != nil {
		return err
	}
	for i := range creators {
		mm.AddToken(token(i), mattermosttest.User{ID: fmt.Sprintf("u%09d%s", i, strings.Repeat("b", 16)), Username: fmt.Sprintf("user%d", i)})
	}
	// The ceiling: a bare Echo handler answering a connection-shaped object.
	bare, bareURL, err := bareEcho()
	if err != nil {
		return err
	}
	defer bare.Close()
	b.bareURL = bareURL

	database := "SQLite (synchronous=FULL)"
	if postgres != "" {
		database = "PostgreSQL on this machine"
	}
	if pgDelay > 0 {
		_, target, err := behind(postgres, "")
		if err != nil {
			return err
		}
		proxy, err := startDelayProxy(target, pgDelay)
		if err != nil {
			return err
		}
		defer proxy.Close()
		b.pgProxy = proxy.Addr()
		proxied, _, _ := behind(postgres, b.pgProxy)
		direct, err := pingTime(postgres)
		if err != nil {
			return fmt.Errorf("-postgres: %w", err)
		}
		delayed, err := pingTime(proxied)
		if err != nil {
			return fmt.Errorf("-postgres-delay: %w", err)
		}
		database += fmt.Sprintf(" behind a proxy holding each packet %s (SELECT 1 takes %s, %s direct)", pgDelay,
			delayed.Round(10*time.Microsecond), direct.Round(10*time.Microsecond))
	}
	fmt.Printf("%s, %d clients, %s per measurement, load from %s\n", database, clients, d, map[string]string{"go": "this process's Go client", "wrk": "wrk"}[loadGen])
	var rounds []round
	for _, n := range sizes {
		r, err := b.round(filepath.Join(dir, fmt.Sprintf("r%d", n)), n)
		if err != nil {
			return err
		}
		rounds = append(rounds, r)
	}
	if len(rounds) > 1 {
		compare(rounds[0], rounds[len(rounds)-1])
	}
	return nil
}

// round is one database size's figures.
type round struct {
	n       int
	results map[string]result
}

const (
	nameBare     = "bare Echo handler"
	nameGet      = "GET /connections/{id}"
	nameGetAny   = "GET /connections/{id}, random ids"
	nameList     = "GET /connections?limit=50"
	nameListDeep = "GET …?limit=50&cursor=(middle)"
	nameCreate   = "POST /connections"
	nameHot      = "GET /connections/{id} of 1,000 ids during creates"
)

// hotSet is how many ids the reads during creates pick from.
const hotSet = 1000

// subdir makes dir's subdirectory name, for a second wrk script beside
// the first, and returns it. Errors: it cannot be made.
func subdir(dir, name string) (string, error) {
	d := filepath.Join(dir, name)
	return d, os.MkdirAll(d, 0o700)
}

// round seeds a database of n connections, starts the binary on it and
// measures everything beside the bare handler.
func (b *bench) round(dir string, n int) (round, error) {
	env := append(os.Environ(),
		"MMCONNECT_ADDR=127.0.0.1:0",
		"MMCONNECT_DATA_DIR="+filepath.Join(dir, "data"),
		"MMCONNECT_API_KEYS=bench:"+b.apiKey,
		"MMCONNECT_ENCRYPTION_KEY="+b.encKey,
		"MMCONNECT_UPSTREAM_CA_FILE="+b.caFile,
		"MMCONNECT_ALLOWED_NETWORKS=127.0.0.0/8",
		"MMCONNECT_RATE_LIMITS=off",
		"MMCONNECT_UPSTREAM_HOST_CONCURRENCY=64",
		"MMCONNECT_REVERIFY_INTERVAL=0",
		"MMCONNECT_MAX_CONNECTIONS_PER_END_USER=100000",
	)
	var seed func() (seeded, error)
	if b.postgres != "" {
		url, drop, err := freshSchema(b.postgres)
		if err != nil {
			return round{}, err
		}
		defer drop()
		serverURL := url
		if b.pgProxy != "" {
			if serverURL, _, err = behind(url, b.pgProxy); err != nil {
				return round{}, err
			}
		}
		env = append(env, "MMCONNECT_DATABASE_URL="+serverURL)
		seed = func() (seeded, error) { return seedPostgres(url, b.key, n) }
	} else {
		seed = func() (seeded, error) { return seedSQLite(filepath.Join(dir, "data", "mmconnect.db"), b.key, n) }
	}
	// Start once to create the schema, then seed while it is stopped.
	srv, _, err := process.Start(b.bin, env)
	if err != nil {
		return round{}, err
	}
	process.Stop(srv)
	t0 := time.Now()
	rows, err := seed()
	if err != nil {
		return round{}, fmt.Errorf("seed: %w", err)
	}
	fmt.Printf("\n%d connections stored (seeded in %s)\n", n, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	srv, base, err := process.Start(b.bin, env)
	if err != nil {
		return round{}, err
	}
	fmt.Printf("start to listening: %s\n", time.Since(t0).Round(time.Millisecond))
	defer process.Stop(srv)

	// The Go client's request for req: the same one wrk's script makes.
	goRequest := func(url string, req wrkRequest, among int) func(client, i int) error {
		switch req.mode {
		case "random":
			return func(int, int) error {
				return b.call("GET", url+"/connections/"+rows.id(rand.IntN(among)), nil, http.StatusOK)
			}
		case "create":
			return func(int, int) error {
				k := int(b.created.Add(1))
				body, _ := json.Marshal(map[string]any{"server_url": b.mm.URL, "token": token(k % creators), "end_user_id": fmt.Sprintf("bench-%d", k)})
				return b.call("POST", url+"/connections", body, http.StatusCreated)
			}
		}
		return func(int, int) error { return b.call("GET", url+req.path, nil, http.StatusOK) }
	}
	// measureWith measures req from clients clients, random ids among the
	// first among rows, with wrk's script in dir.
	measureWith := func(dir, name, url string, req wrkRequest, clients, among int) (result, error) {
		before := cpuSnapshot(srv.Process.Pid)
		if b.load != "wrk" {
			r := load(name, clients, b.d, goRequest(url, req, among))
			r.cpu = cpuSnapshot(srv.Process.Pid).since(before)
			return r, nil
		}
		offset := b.created.Add(wrkOffsetStep) - wrkOffsetStep
		r, wrkCPU, err := runWrk(dir, name, url, req, clients, b.d, []string{"BENCH_KEY=" + b.apiKey,
			fmt.Sprintf("BENCH_ROWS=%d", among), "BENCH_MM=" + b.mm.URL, fmt.Sprintf("BENCH_CREATORS=%d", creators), fmt.Sprintf("BENCH_OFFSET=%d", offset)})
		r.cpu = cpuSnapshot(srv.Process.Pid).since(before)
		r.cpu.bench, r.cpu.rest = r.cpu.bench+wrkCPU, r.cpu.rest-wrkCPU
		return r, err
	}
	measure := func(name, url string, req wrkRequest) (result, error) {
		return measureWith(dir, name, url, req, b.clients, n)
	}
	var results []result
	var cacheLines []string
	metricsBefore := scrape(b.client, base, b.apiKey) // each measurement's after is the next one's before
	for _, m := range []struct {
		name, url string
		req       wrkRequest
	}{
		{nameBare, b.bareURL, wrkRequest{mode: "get"}},
		{nameGet, base, wrkRequest{"get", "/connections/" + rows.id(0)}},
		{nameGetAny, base, wrkRequest{mode: "random"}},
		{nameList, base, wrkRequest{"get", "/connections?limit=50"}},
		{nameListDeep, base, wrkRequest{"get", "/connections?limit=50&cursor=" + rows.cursor(n/2)}},
	} {
		r, err := measure(m.name, m.url, m.req)
		if err != nil {
			return round{}, err
		}
		results = append(results, r)
		after := scrape(b.client, base, b.apiKey)
		if hits, reads := cacheHits(metricsBefore, after); reads > 0 {
			cacheLines = append(cacheLines, fmt.Sprintf("%s %.1f%%", m.name, 100*hits/reads))
		}
		metricsBefore = after
	}
	handshakes := b.mm.Connections()
	create, err := measure(nameCreate, base, wrkRequest{mode: "create"})
	if err != nil {
		return round{}, err
	}
	handshakes = b.mm.Connections() - handshakes
	metricsAfter := scrape(b.client, base, b.apiKey)
	if b.load == "wrk" { // wrk takes any 2xx; a create is a 201
		created := metricsAfter[created201] - metricsBefore[created201]
		if short := int64(create.n) - int64(created); short > 0 {
			create.n, create.errs = int(created), create.errs+short
		}
	}
	results = append(results, create)

	// Reads of a hot set of ids while connections are made beside them,
	// as an app's page loads ask for status while its users connect: the
	// share of reads the row cache serves is what the creates' commits
	// leave it.
	hotRows, writers := min(n, hotSet), max(1, b.clients/8)
	var hot, beside result
	hotDir, hotErr := subdir(dir, "hot")
	besideDir, besideErr := subdir(dir, "beside")
	if err := errors.Join(hotErr, besideErr); err != nil {
		return round{}, err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		hot, hotErr = measureWith(hotDir, nameHot, base, wrkRequest{mode: "random"}, b.clients-writers, hotRows)
	}()
	go func() {
		defer wg.Done()
		beside, besideErr = measureWith(besideDir, nameCreate, base, wrkRequest{mode: "create"}, writers, n)
	}()
	wg.Wait()
	if err := errors.Join(hotErr, besideErr); err != nil {
		return round{}, err
	}
	metricsHot := scrape(b.client, base, b.apiKey)

	ceiling := results[0].rps()
	fmt.Printf("%-34s %9s %8s %10s %10s %6s   %s\n", "", "req/s", "× bare", "p50", "p99", "errors", "CPU per request: server, bench, rest")
	out := round{n: n, results: map[string]result{}}
	for _, r := range results {
		fmt.Printf("%-34s %9.0f %8.2f %10s %10s %6d   %s, %s, %s\n", r.name, r.rps(), r.rps()/ceiling, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.errs,
			r.perRequest(r.cpu.server), r.perRequest(r.cpu.bench), r.perRequest(r.cpu.rest))
		out.results[r.name] = r
	}
	if len(cacheLines) > 0 {
		fmt.Printf("row cache hits during the reads: %s\n", strings.Join(cacheLines, "; "))
	}
	fmt.Printf("%s: %.0f/s, p50 %s, p99 %s, %d errors", nameHot, hot.rps(), hot.p50.Round(time.Microsecond), hot.p99.Round(time.Microsecond), hot.errs)
	if hits, reads := cacheHits(metricsAfter, metricsHot); reads > 0 {
		fmt.Printf(", row cache hits %.1f%%", 100*hits/reads)
	}
	fmt.Printf("; beside %.0f creates/s from %d clients\n", beside.rps(), writers)
	out.results[nameHot] = hot
	fmt.Printf("upstream TLS handshakes during the creates: %d\n", handshakes)
	if bt := metricsAfter["mmconnect_db_write_batches_total"] - metricsBefore["mmconnect_db_write_batches_total"]; bt > 0 {
		w := metricsAfter["mmconnect_db_batched_writes_total"] - metricsBefore["mmconnect_db_batched_writes_total"]
		busy := metricsAfter["mmconnect_db_write_batch_busy_seconds_total"] - metricsBefore["mmconnect_db_write_batch_busy_seconds_total"]
		fmt.Printf("SQLite group commit during the creates: %.0f batches, %.1f writes each, writer busy %.0f%% of the run\n",
			bt, w/bt, 100*busy/results[len(results)-1].elapsed.Seconds())
	}
	fmt.Printf("server peak RSS: %.1f MiB\n", float64(process.PeakRSS(srv.Process.Pid))/(1<<20))
	return out, nil
}

// call makes one request with the API key (a JSON body when body is not
// nil), reads the answer and wants the status want.
func (b *bench) call(method, url string, body []byte, want int) error {
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+b.apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d", method, url, resp.StatusCode)
	}
	return nil
}

// compare prints the figures of the largest database against the
// smallest's, measured in the same run.
func compare(small, large round) {
	fmt.Printf("\n%d against %d connections, same run:\n", large.n, small.n)
	for _, name := range []string{nameGet, nameGetAny, nameList, nameListDeep} {
		s, l := small.results[name], large.results[name]
		fmt.Printf("  %-34s p50 %s against %s: %.2f×\n", name, l.p50.Round(time.Microsecond), s.p50.Round(time.Microsecond),
			float64(l.p50)/float64(max(s.p50, 1)))
	}
	s, l := small.results[nameCreate], large.results[nameCreate]
	fmt.Printf("  %-34s %.0f/s against %.0f/s: throughput %.2f× (p99 %s against %s)\n", nameCreate, l.rps(), s.rps(),
		l.rps()/max(s.rps(), 1), l.p99.Round(time.Microsecond), s.p99.Round(time.Microsecond))
	sb, lb := small.results[nameBare], large.results[nameBare]
	fmt.Printf("  (the bare handler itself: %.0f/s against %.0f/s, the machine's drift between the rounds)\n", lb.rps(), sb.rps())
}

// cacheHits is how the reads through the server's row cache went between
// two scrapes: how many hit, of how many (none without a row cache, as on
// PostgreSQL).
func cacheHits(before, after map[string]float64) (hits, reads float64) {
	for _, cache := range []string{"connection", "page"} {
		for _, res := range []string{"hit", "miss", "stale"} {
			k := fmt.Sprintf("mmconnect_db_row_cache_reads_total{cache=%q,result=%q}", cache, res)
			reads += after[k] - before[k]
			if res == "hit" {
				hits += after[k] - before[k]
			}
		}
	}
	return hits, reads
}

// scrape reads the server's counters from /metrics, each under its name
// with its labels as the text format writes them.
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

// seeded describes the rows a seed wrote: row i has id(i) and was created
// at base+i microseconds.
type seeded struct {
	n    int
	base int64
}

// id is row i's id, of the API's form and in the order of i.
func (s seeded) id(i int) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	return connection.FormatOrderedID("conn_", b)
}

// cursor is the listing cursor positioned at row i.
func (s seeded) cursor(i int) string {
	return connection.EncodeCursor(connection.Position{CreatedAt: time.UnixMicro(s.base + int64(i)).UTC(), ID: s.id(i)})
}

// seedColumns are the columns a seed writes, in seedRow's order.
var seedColumns = []string{"id", "server_url", "end_user_id", "status", "mattermost_user_id", "mattermost_username",
	"mattermost_email", "server_version", "token_hint", "sealed_token", "generation", "created_at", "updated_at",
	"last_verified_at", "last_checked_at", "next_check_at"}

// seeder seals row tokens as the server does, under the server's key.
type seeder struct {
	seeded
	sealer *secret.Sealer
	keyID  string
}

func newSeeder(key []byte, n int) (*seeder, error) {
	sealer, err := secret.NewSealer(key)
	if err != nil {
		return nil, err
	}
	return &seeder{seeded: seeded{n: n, base: time.Now().UnixMicro() - int64(n)}, sealer: sealer, keyID: secret.KeyID(key)}, nil
}

// row is row i's values in seedColumns' order: an active connection.
func (s *seeder) row(i int) ([]any, error) {
	id, user := s.id(i), fmt.Sprintf("s%025d", i) // the account's id is also its token
	sealed, err := s.sealer.Seal([]byte(user), []byte(id))
	if err != nil {
		return nil, err
	}
	at := s.base + int64(i)
	return []any{id, "https://seed.example.com", fmt.Sprintf("seed-end-%d", i), "active", user, "seed",
		"seed@example.com", "11.4.0", "aaaa", string(sealed), 1, at, at, at, at, at}, nil
}

// seedSQLite writes n active connections straight into the SQLite file,
// in transactions of 10,000 rows.
func seedSQLite(path string, key []byte, n int) (seeded, error) {
	s, err := newSeeder(key, n)
	if err != nil {
		return seeded{}, err
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=OFF&_busy_timeout=5000")
	if err != nil {
		return seeded{}, err
	}
	defer db.Close()
	insert := "INSERT INTO connections (" + strings.Join(seedColumns, ", ") + ") VALUES (?" + strings.Repeat(", ?", len(seedColumns)-1) + ")"
	for done := 0; done < n; {
		tx, err := db.Begin()
		if err != nil {
			return seeded{}, err
		}
		stmt, err := tx.Prepare(insert)
		if err != nil {
			return seeded{}, err
		}
		for end := min(done+10000, n); done < end; done++ {
			row, err := s.row(done)
			if err != nil {
				return seeded{}, err
			}
			if _, err := stmt.Exec(row...); err != nil {
				return seeded{}, err
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return seeded{}, err
		}
	}
	if _, err := db.Exec("INSERT INTO sealing_keys (key_id) VALUES (?) ON CONFLICT (key_id) DO NOTHING", s.keyID); err != nil {
		return seeded{}, err
	}
	if _, err = db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return seeded{}, err
	}
	// The seed writes without fsync, so the kernel still holds the
	// file's pages (about 640 MB at a million rows) when the server
	// starts. Written out here, before it starts: otherwise the server's
	// first fsync waited for them, and a million rows' creates showed a
	// p99 of 223-397 ms, all the requests in flight stalled once, where
	// 54-81 ms with them written out first.
	if err := db.Close(); err != nil {
		return seeded{}, err
	}
	syscall.Sync()
	return s.seeded, nil
}

// seedPostgres writes n active connections with COPY, then analyzes the
// table as autovacuum would.
func seedPostgres(url string, key []byte, n int) (seeded, error) {
	s, err := newSeeder(key, n)
	if err != nil {
		return seeded{}, err
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return seeded{}, err
	}
	defer conn.Close(ctx)
	i := 0
	var rowErr error
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"connections"}, seedColumns, pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		row, err := s.row(i)
		i++
		if err != nil {
			rowErr = err
		}
		return row, err
	}))
	if err != nil {
		return seeded{}, errors.Join(err, rowErr)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO sealing_keys (key_id) VALUES ($1) ON CONFLICT (key_id) DO NOTHING", s.keyID); err != nil {
		return seeded{}, err
	}
	// A table just filled by COPY is in a state a live one is not: no
	// row's hint bits set (each first read of a page sets them, a write
	// of its own), no visibility map, and its pages still to be written
	// by a checkpoint that would run during the measurements. VACUUM and
	// a checkpoint leave it as autovacuum and time leave a live table.
	if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) connections"); err != nil {
		return seeded{}, err
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		fmt.Printf("no checkpoint after the seed (it takes a superuser or pg_checkpoint), so one may run during the measurements: %v\n", err)
	}
	return s.seeded, nil
}

// seedOnly fills one database with n active connections, for measuring
// by hand at scale: the one this process's environment, with dataDir and
// postgresURL, configures the server for (the data dir's SQLite, or the
// PostgreSQL). It starts the binary once first, so the schema is current
// and (without MMCONNECT_ENCRYPTION_KEY(S)) the data dir's key exists; the
// tokens are sealed under the key that seals, as the server seals them.
// Every seed writes the same ids, so a database can be seeded once.
func seedOnly(bin string, n int, dataDir, postgresURL string) error {
	env := append(os.Environ(), "MMCONNECT_ADDR=127.0.0.1:0", "MMCONNECT_DATA_DIR="+dataDir)
	if postgresURL != "" {
		env = append(env, "MMCONNECT_DATABASE_URL="+postgresURL)
		if os.Getenv("MMCONNECT_API_KEYS") == "" { // required with PostgreSQL; this start serves nobody
			env = append(env, "MMCONNECT_API_KEYS=seed:"+secret.NewAPIKey())
		}
	}
	cfg, err := config.Load(func(name string) string { // the last setting wins, as in a process's environment
		v := ""
		for _, kv := range env {
			if k, val, ok := strings.Cut(kv, "="); ok && k == name {
				v = val
			}
		}
		return v
	})
	if err != nil {
		return err
	}
	srv, _, err := process.Start(bin, env)
	if err != nil {
		return err
	}
	process.Stop(srv)
	key, err := sealingKey(cfg)
	if err != nil {
		return err
	}
	t0 := time.Now()
	where := cfg.SQLitePath
	if cfg.PostgresURL != "" {
		where = "PostgreSQL"
		if u, perr := neturl.Parse(cfg.PostgresURL); perr == nil {
			where = u.Redacted() // no password in the output
		}
		_, err = seedPostgres(cfg.PostgresURL, key, n)
	} else {
		_, err = seedSQLite(cfg.SQLitePath, key, n)
	}
	if err != nil {
		return err
	}
	fmt.Printf("seeded %d connections into %s in %s\n", n, where, time.Since(t0).Round(time.Millisecond))
	return nil
}

// sealingKey is the key the server configured by cfg seals with: the first
// of MMCONNECT_ENCRYPTION_KEYS, or the data dir's key file.
func sealingKey(cfg config.Config) ([]byte, error) {
	if len(cfg.EncryptionKeys) > 0 {
		return cfg.EncryptionKeys[0], nil
	}
	v, err := secret.ReadKeyFile(cfg.EncryptionKeyFile)
	if err != nil {
		return nil, err
	}
	return secret.ParseKey(v)
}

// freshSchema makes a schema of its own in the PostgreSQL at base and
// returns a URL that uses it, and a function that drops it.
func freshSchema(base string) (string, func(), error) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("-postgres: %w", err)
	}
	schema := fmt.Sprintf("mmc_bench_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		conn.Close(ctx)
		return "", nil, err
	}
	conn.Close(ctx)
	u, err := neturl.Parse(base)
	if err != nil {
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), func() {
		if conn, err := pgx.Connect(ctx, base); err == nil {
			conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			conn.Close(ctx)
		}
	}, nil
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

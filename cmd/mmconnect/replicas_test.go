package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
	"github.com/mmconnect/mmconnect/internal/secret"
	"github.com/mmconnect/mmconnect/internal/store/migrations"
	"github.com/mmconnect/mmconnect/internal/store/storetest"
)

const userAlice = "b95oboh88frobdioocwwdoqhdc"

// postgresEnv is the environment of one replica of a PostgreSQL deployment.
func postgresEnv(t *testing.T, mm *mattermosttest.Server, dsn, apiKey, encKey string) map[string]string {
	env := newEnv(t, mm)
	env["MMCONNECT_DATABASE_URL"] = dsn
	env["MMCONNECT_API_KEYS"] = apiKey
	env["MMCONNECT_ENCRYPTION_KEY"] = encKey
	env["MMCONNECT_DB_MAX_CONNS"] = "4"
	return env
}

func TestTwoReplicasOnOnePostgres(t *testing.T) {
	dsn := storetest.PostgresURL(t)
	mm := newMattermost(t)
	apiKey, encKey := secret.NewAPIKey(), secret.NewEncryptionKey()
	// Both start at the same moment: the migrations run once, under the lock.
	a := launch(t, postgresEnv(t, mm, dsn, apiKey, encKey))
	b := launch(t, postgresEnv(t, mm, dsn, apiKey, encKey))
	a.waitReady()
	b.waitReady()

	status, c, _ := a.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "u1"})
	if status != 201 {
		t.Fatalf("create on A = %d %v", status, c)
	}
	id := c["id"].(string)
	if status, got, _ := b.call("GET", "/connections/"+id, nil); status != 200 || got["id"] != id {
		t.Fatalf("get on B = %d %v", status, got)
	}
	if status, list, _ := b.call("GET", "/connections?end_user_id=u1", nil); status != 200 || len(list["data"].([]any)) != 1 {
		t.Fatalf("list on B = %d %v", status, list)
	}
	if status, v, _ := b.call("POST", "/connections/"+id+"/verify", nil); status != 200 || v["status"] != "active" {
		t.Fatalf("verify on B = %d %v", status, v)
	}
	if status, cred, _ := b.call("GET", "/connections/"+id+"/credentials", nil); status != 200 || cred["token"] != tokenA {
		t.Fatalf("credentials on B = %d (B opens what A sealed)", status)
	}
	if status, _, _ := b.call("DELETE", "/connections/"+id, nil); status != 204 {
		t.Fatalf("revoke on B = %d", status)
	}
	if status, got, _ := a.call("GET", "/connections/"+id, nil); status != 200 || got["status"] != "revoked" {
		t.Fatalf("A after B revoked = %d %v", status, got)
	}
	if mm.HasToken(tokenA) {
		t.Fatal("the revoke on B did not revoke the token in Mattermost")
	}
	mm.AddToken(tokenA, alice()) // a new token

	// The reconnect race across replicas: identical requests at the same
	// moment on both leave one connection.
	const n = 8
	var wg sync.WaitGroup
	statuses := make([]int, n)
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := []*instance{a, b}[i%2]
			var body map[string]any
			statuses[i], body, _ = in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "racer"})
			if id, ok := body["id"].(string); ok {
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	created := 0
	for i := range n {
		switch statuses[i] {
		case 201:
			created++
		case 200:
		default:
			t.Fatalf("racing request %d: %d", i, statuses[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("racing requests got different connections: %v", ids)
		}
	}
	if created != 1 {
		t.Fatalf("%d racing requests created a connection, want 1: %v", created, statuses)
	}
	if _, list, _ := a.call("GET", "/connections?end_user_id=racer", nil); len(list["data"].([]any)) != 1 {
		t.Fatalf("%d connections after the race, want 1", len(list["data"].([]any)))
	}

	// A connect session opened on A works on B.
	_, s, _ := a.call("POST", "/connect/sessions", map[string]any{"end_user_id": "racer"})
	token := s["token"].(string)
	req, _ := http.NewRequest("GET", b.base+"/connect/session", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("session from A on B: %v %v", resp, err)
	}
	resp.Body.Close()

	// An Idempotency-Key used on A is answered from the database on B.
	post := func(in *instance) (int, string, string) {
		req, _ := http.NewRequest("POST", in.base+"/connect/sessions", strings.NewReader(`{"end_user_id":"idem"}`))
		req.Header.Set("Authorization", "Bearer "+in.key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "replica-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header.Get("Idempotent-Replayed")
	}
	stA, bodyA, _ := post(a)
	stB, bodyB, replayed := post(b)
	if stA != 201 || stB != 201 || bodyA != bodyB || replayed != "true" {
		t.Fatalf("idempotent create on A then B: %d / %d replayed=%q, same body %v", stA, stB, replayed, bodyA == bodyB)
	}

	a.stop()
	b.stop()
	applied := strings.Count(a.logs.String(), `"msg":"migration applied"`) + strings.Count(b.logs.String(), `"msg":"migration applied"`)
	sqlFiles, _ := fs.Glob(migrations.FS, "*.sql")
	known := len(sqlFiles) + len(migrations.Go(true))
	if applied != known {
		t.Fatalf("the two replicas applied %d migrations between them, want each of the %d once", applied, known)
	}
	for _, in := range []*instance{a, b} {
		for _, secretValue := range []string{tokenA, token, apiKey, encKey} {
			if strings.Contains(in.logs.String(), secretValue) {
				t.Fatalf("a secret is in a replica's log")
			}
		}
	}
}

func TestPostgresNeedsSharedKeys(t *testing.T) {
	dsn := storetest.PostgresURL(t)
	env := map[string]string{"MMCONNECT_DATA_DIR": t.TempDir(), "MMCONNECT_DATABASE_URL": dsn, "MMCONNECT_ENCRYPTION_KEY": secret.NewEncryptionKey()}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "MMCONNECT_API_KEYS") {
		t.Fatalf("start without shared API keys: %v", err)
	}
}

func TestOlderReplicaRefusesNewerSchema(t *testing.T) {
	dsn := storetest.PostgresURL(t)
	mm := mattermosttest.NewServer(t)
	env := postgresEnv(t, mm, dsn, secret.NewAPIKey(), secret.NewEncryptionKey())
	if err := run(context.Background(), []string{"migrate"}, func(k string) string { return env[k] }, io.Discard, io.Discard); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, true)"); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "upgrade mmconnect") {
		t.Fatalf("an older replica started on a newer schema: %v", err)
	}
}

// cutProxy stands between a replica and PostgreSQL so a test can take the
// database away and give it back on the same address.
type cutProxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut drops every connection and refuses new ones.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// restore listens again on the same address.
func (p *cutProxy) restore() {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("relisten on %s: %v", p.addr, err)
}

func TestPostgresOutageAnswers503AndRecovers(t *testing.T) {
	dsn := storetest.PostgresURL(t)
	pgAddr := strings.SplitN(strings.SplitN(dsn, "@", 2)[1], "/", 2)[0]
	proxy := newCutProxy(t, pgAddr)
	proxied := strings.Replace(dsn, pgAddr, proxy.addr, 1)
	mm := mattermosttest.NewServer(t)
	mm.AddToken(tokenA, mattermosttest.User{ID: userAlice, Username: "alice"})
	env := postgresEnv(t, mm, proxied, secret.NewAPIKey(), secret.NewEncryptionKey())
	env["MMCONNECT_DB_STATEMENT_TIMEOUT"] = "2s"
	in := start(t, env)

	status, acked, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "before"})
	if status != 201 {
		t.Fatalf("create = %d", status)
	}

	proxy.cut()
	ready := func() int {
		resp, err := http.Get(in.base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	started := time.Now()
	if got := ready(); got != 503 {
		t.Fatalf("/readyz with the database gone = %d, want 503", got)
	}
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "during"}},
		{"GET", "/connections/" + acked["id"].(string), nil},
		{"GET", "/connections", nil},
	} {
		status, p, _ := in.call(req.method, req.path, req.body)
		if status != 503 || p["code"] != "database_unavailable" {
			t.Fatalf("%s %s during the outage = %d %v, want 503 database_unavailable", req.method, req.path, status, p)
		}
	}
	if took := time.Since(started); took > 20*time.Second {
		t.Fatalf("answering during the outage took %v: requests hang", took)
	}

	proxy.restore()
	deadline := time.Now().Add(20 * time.Second)
	for ready() != 200 {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not recover after the database came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if status, got, _ := in.call("GET", "/connections/"+acked["id"].(string), nil); status != 200 || got["status"] != "active" {
		t.Fatalf("the write acknowledged before the outage = %d %v", status, got)
	}
	if _, list, _ := in.call("GET", "/connections?end_user_id=during", nil); len(list["data"].([]any)) != 0 {
		t.Fatal("a request answered 503 stored a connection")
	}
	if status, _, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "after"}); status != 201 {
		t.Fatalf("create after recovery = %d", status)
	}
}

// mmconnect backup copies the SQLite database while the server writes.
func TestBackupWhileServing(t *testing.T) {
	mm := mattermosttest.NewServer(t)
	mm.AddToken(tokenA, mattermosttest.User{ID: userAlice, Username: "alice"})
	env := newEnv(t, mm)
	in := start(t, env)
	for i := range 5 {
		if status, _, _ := in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": fmt.Sprint("before-", i)}); status != 201 {
			t.Fatalf("create = %d", status)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // writes keep coming while the backup runs
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			in.call("POST", "/connections", map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": fmt.Sprint("during-", i)})
		}
	}()
	dest := filepath.Join(t.TempDir(), "backup.db")
	var out strings.Builder
	err := run(context.Background(), []string{"backup", dest}, func(k string) string { return env[k] }, &out, io.Discard)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	st, err := os.Stat(dest)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", st, err)
	}
	db, err := sql.Open("sqlite3", "file:"+dest+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM connections WHERE end_user_id LIKE 'before-%'").Scan(&n); err != nil || n != 5 {
		t.Fatalf("backup holds %d of the 5 connections made before it (%v)", n, err)
	}
	raw, _ := os.ReadFile(dest)
	if strings.Contains(string(raw), tokenA) {
		t.Fatal("the backup holds a token in plain")
	}
	if err := run(context.Background(), []string{"backup", dest}, func(k string) string { return env[k] }, io.Discard, io.Discard); err == nil {
		t.Fatal("backup overwrote an existing file")
	}
}

func TestMigrateCommandOnSQLite(t *testing.T) {
	env := map[string]string{"MMCONNECT_DATA_DIR": t.TempDir()}
	if err := run(context.Background(), []string{"migrate"}, func(k string) string { return env[k] }, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(env["MMCONNECT_DATA_DIR"], "mmconnect.db")); err != nil {
		t.Fatalf("migrate made no database: %v", err)
	}
}

package connection_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/mattermost"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
	"github.com/mmconnect/mmconnect/internal/secret"
	"github.com/mmconnect/mmconnect/internal/store"
	"github.com/mmconnect/mmconnect/internal/store/storetest"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// clock is a test clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const interval = time.Hour

// world is the real service on a real store, checking against a fake
// Mattermost over TLS through the real client, on a test clock.
type world struct {
	svc   *connection.Service
	store *store.Store
	mm    *mattermosttest.Server
	clock *clock
}

var (
	alice = mattermosttest.User{ID: "b95oboh88frobdioocwwdoqhdc", Username: "alice", Email: "alice@example.com"}
	bob   = mattermosttest.User{ID: "sijnzjnrq7dfmy7u4f6m651gpr", Username: "bob", Email: "bob@example.com", NoRevokeRole: true}
)

type worldOptions struct {
	postgresURL string // empty: a fresh SQLite file
	mm          *mattermosttest.Server
	clock       *clock
	concurrency int
	retention   time.Duration
}

func newWorld(t *testing.T, o worldOptions) *world {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var st *store.Store
	var err error
	if o.postgresURL != "" {
		st, err = store.OpenPostgres(ctx, o.postgresURL, store.PostgresOptions{MaxConns: 4}, log)
	} else {
		st, err = store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "db"), log)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if o.mm == nil {
		o.mm = mattermosttest.NewServer(t)
		o.mm.AddToken(tok, alice)
		o.mm.AddToken(tok2, bob)
	}
	if o.clock == nil {
		o.clock = newClock()
	}
	if o.concurrency == 0 {
		o.concurrency = 4
	}
	pool, err := mattermost.LoadRootCAs(o.mm.CAFile(t))
	if err != nil {
		t.Fatal(err)
	}
	client := mattermost.New(mattermost.Options{Timeout: 2 * time.Second, RootCAs: pool,
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	sealer, _ := secret.NewSealer(bytes.Repeat([]byte{1}, 32))
	svc := connection.NewService(st, client, sealer, connection.WithClock(o.clock.Now),
		connection.WithEvents(true), connection.WithRevoker(client, true),
		connection.WithRecheck(connection.RecheckOptions{Interval: interval, Concurrency: o.concurrency}),
		connection.WithRetention(o.retention))
	return &world{svc: svc, store: st, mm: o.mm, clock: o.clock}
}

func (w *world) connect(t *testing.T, token, endUser string) connection.Connection {
	t.Helper()
	c, _, err := w.svc.Connect(context.Background(), connection.ConnectInput{ServerURL: w.mm.URL, Token: token, EndUserID: &endUser})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return c
}

func (w *world) get(t *testing.T, id string) connection.Connection {
	t.Helper()
	c, err := w.svc.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return c
}

// round advances the clock by d and runs one re-check round.
func (w *world) round(t *testing.T, d time.Duration) int {
	t.Helper()
	w.clock.Advance(d)
	n, err := w.svc.RecheckDue(context.Background())
	if err != nil {
		t.Fatalf("RecheckDue: %v", err)
	}
	return n
}

// eventTypes lists the recorded events of a connection in sequence order.
func (w *world) eventTypes(t *testing.T, id string) []string {
	t.Helper()
	ds, err := w.store.ListDeliveries(context.Background(), webhook.ListFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	bySeq := map[int64]string{}
	for _, d := range ds {
		if d.ConnectionID == id {
			if _, dup := bySeq[d.Event.Sequence]; dup {
				t.Fatalf("two events of %s have sequence %d", id, d.Event.Sequence)
			}
			bySeq[d.Event.Sequence] = string(d.Event.Type)
		}
	}
	var out []string
	for i := int64(1); i <= int64(len(bySeq)); i++ {
		typ, ok := bySeq[i]
		if !ok {
			t.Fatalf("events of %s are not numbered 1..%d: %v", id, len(bySeq), bySeq)
		}
		out = append(out, typ)
	}
	return out
}

// A token removed in Mattermost makes the connection invalid within one
// interval of its last check; put back, it recovers. Each change records
// its event.
func TestBackgroundRecheckFlipsInvalidAndRecovers(t *testing.T) {
	w := newWorld(t, worldOptions{})
	c := w.connect(t, tok, "u1")
	usersMe := func() int64 { return w.mm.PathRequests("/api/v4/users/me") }
	before := usersMe()

	if n := w.round(t, interval/2); n != 0 {
		t.Fatalf("half an interval after connecting, %d connections were due; want 0", n)
	}
	if n := w.round(t, interval/2+interval/10+time.Second); n != 1 {
		t.Fatalf("an interval (plus the most jitter) after connecting, %d were due; want 1", n)
	}
	if got := usersMe() - before; got != 1 {
		t.Fatalf("the round asked Mattermost %d times; want 1", got)
	}
	if got := w.get(t, c.ID); got.Status != connection.StatusActive || !got.LastCheckedAt.Equal(w.clock.Now()) {
		t.Fatalf("after a good re-check: status %s, last_checked_at %v; want active, %v", got.Status, got.LastCheckedAt, w.clock.Now())
	}

	w.mm.RevokeToken(tok)
	w.round(t, interval+interval/10+time.Second)
	got := w.get(t, c.ID)
	if got.Status != connection.StatusInvalid || got.LastError == nil || got.LastError.Code != connection.CodeTokenRejected {
		t.Fatalf("after the token was removed: %+v; want invalid with token_rejected", got)
	}
	if got.InvalidSince == nil || !got.InvalidSince.Equal(w.clock.Now()) {
		t.Fatalf("invalid_since = %v; want %v", got.InvalidSince, w.clock.Now())
	}
	invalidAt := *got.InvalidSince
	verifiedAt := *got.LastVerifiedAt

	// Still rejected a round later: invalid_since stays where it turned.
	w.round(t, interval+interval/10+time.Second)
	if got := w.get(t, c.ID); got.InvalidSince == nil || !got.InvalidSince.Equal(invalidAt) || !got.LastVerifiedAt.Equal(verifiedAt) {
		t.Fatalf("a second rejection moved invalid_since to %v (want %v) or last_verified_at", got.InvalidSince, invalidAt)
	}

	w.mm.AddToken(tok, alice)
	w.round(t, interval+interval/10+time.Second)
	got = w.get(t, c.ID)
	if got.Status != connection.StatusActive || got.InvalidSince != nil || got.LastError != nil {
		t.Fatalf("after the token works again: %+v; want active, no invalid_since, no last_error", got)
	}
	if got, want := w.eventTypes(t, c.ID), []string{"connection.created", "connection.invalid", "connection.recovered"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events = %v, want %v", got, want)
	}
	// A status change never rewrote the token: it still opens.
	if cred, err := w.svc.Credentials(context.Background(), c.ID); err != nil || cred.Token != tok {
		t.Fatalf("credentials after re-checks: %v", err)
	}
}

// A server that answers 429 is left alone until its Retry-After has
// passed, for every connection on it.
func TestBackgroundRecheckHonoursRetryAfter(t *testing.T) {
	w := newWorld(t, worldOptions{concurrency: 1})
	a := w.connect(t, tok, "u1")
	w.connect(t, tok2, "u2")
	calls := 0
	w.mm.Override(func(rw http.ResponseWriter, r *http.Request) {
		calls++
		rw.Header().Set("Retry-After", "7200") // two intervals
		rw.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(rw, "limit exceeded\n")
	})
	if n := w.round(t, interval+interval/10+time.Second); n != 2 {
		t.Fatalf("%d due; want 2", n)
	}
	if calls != 1 {
		t.Fatalf("the round called a rate-limited server %d times; want 1 (the second connection waits)", calls)
	}
	if got := w.get(t, a.ID); got.Status != connection.StatusActive {
		t.Fatalf("a 429 changed the status to %s", got.Status)
	}
	// An interval later the server's wait has not passed: no call.
	w.round(t, interval+interval/10+time.Second)
	if calls != 1 {
		t.Fatalf("during Retry-After the server was called %d times; want 1", calls)
	}
	w.mm.Override(nil)
	before := w.mm.Requests()
	w.round(t, interval)
	if got := w.mm.Requests() - before; got == 0 {
		t.Fatal("after Retry-After passed, nothing was checked")
	}
}

// A check whose answer arrives after a newer check was recorded records
// nothing: the stored last_checked_at is newer than when it started.
func TestOlderCheckNeverOverwritesNewer(t *testing.T) {
	ctx := context.Background()
	v := &fakeVerifier{verify: accept}
	clk := newClock()
	st, sealer := openStore(t)
	svc := connection.NewService(st, v, sealer, connection.WithClock(func() time.Time { clk.Advance(time.Millisecond); return clk.Now() }))
	c, _, err := svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	v.verify = func(ctx context.Context, s, tk string) (connection.Identity, error) {
		v.verify = accept // the newer check: accepted, recorded first
		if _, err := svc.Verify(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		return connection.Identity{}, &connection.UpstreamError{Code: connection.CodeTokenRejected, Message: "no"}
	}
	got, err := svc.Verify(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != connection.StatusActive {
		t.Fatalf("the older check's rejection was recorded over the newer acceptance: status %s", got.Status)
	}
}

// Two replicas on one PostgreSQL schema check each due connection once
// per round, counted at the fake.
func TestTwoReplicasCheckEachDueConnectionOnce(t *testing.T) {
	url := storetest.PostgresURL(t)
	mm := mattermosttest.NewServer(t)
	clk := newClock()
	a := newWorld(t, worldOptions{postgresURL: url, mm: mm, clock: clk})
	b := newWorld(t, worldOptions{postgresURL: url, mm: mm, clock: clk})
	const n = 24
	for i := range n {
		token := fmt.Sprintf("tok%022dy", i)
		mm.AddToken(token, mattermosttest.User{ID: fmt.Sprintf("user%022d", i), Username: fmt.Sprintf("user%d", i)})
		a.connect(t, token, fmt.Sprintf("end-%d", i))
	}
	for round := 1; round <= 2; round++ {
		before := mm.PathRequests("/api/v4/users/me")
		clk.Advance(interval + interval/10 + time.Second)
		var wg sync.WaitGroup
		claimed := make([]int, 2)
		for i, w := range []*world{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					k, err := w.svc.RecheckDue(context.Background())
					if err != nil {
						t.Error(err)
						return
					}
					if k == 0 {
						return
					}
					claimed[i] += k
				}
			}()
		}
		wg.Wait()
		if got := mm.PathRequests("/api/v4/users/me") - before; got != n {
			t.Fatalf("round %d: Mattermost was asked %d times for %d due connections; want each once", round, got, n)
		}
		if claimed[0]+claimed[1] != n {
			t.Fatalf("round %d: replicas claimed %v; want %d in all", round, claimed, n)
		}
		t.Logf("round %d: replica A checked %d, B %d", round, claimed[0], claimed[1])
	}
}

func openStore(t *testing.T) (*store.Store, connection.Sealer) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sealer, _ := secret.NewSealer(bytes.Repeat([]byte{1}, 32))
	return st, sealer
}

func webhookDelivered(at time.Time) webhook.Outcome {
	return webhook.Outcome{At: at, ResponseStatus: 204, Status: webhook.StatusDelivered, NextAttemptAt: at}
}

// A check cut short by its caller (a shutdown) records nothing: the server
// was not heard.
func TestInterruptedCheckRecordsNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	v := &fakeVerifier{verify: accept}
	st, sealer := openStore(t)
	svc := connection.NewService(st, v, sealer)
	c, _, err := svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	v.verify = func(ctx context.Context, _, _ string) (connection.Identity, error) {
		cancel()
		return connection.Identity{}, &connection.UpstreamError{Code: connection.CodeUpstreamUnreachable, Message: "cut", Err: ctx.Err()}
	}
	if _, err := svc.Verify(ctx, c.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify with its caller gone: %v, want context.Canceled", err)
	}
	got, _ := svc.Get(context.Background(), c.ID)
	if got.LastError != nil || !got.LastCheckedAt.Equal(*c.LastCheckedAt) {
		t.Fatalf("an interrupted check was recorded: %+v", got.LastError)
	}
}

// Live lists every connection of an end user that is not revoked, past
// one page, and no one else's.
func TestLiveListsEveryLiveConnection(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, worldOptions{})
	at := w.clock.Now()
	for i := range 205 {
		c := connection.Connection{ID: fmt.Sprintf("conn_%026d", i), ServerURL: "https://mm.example.com", EndUserID: ptr("u1"),
			Status: connection.StatusActive, MattermostUser: connection.MattermostUser{ID: fmt.Sprintf("user%022d", i), Username: "a"},
			SealedToken: []byte("mmc1.x.y"), Generation: 1, CreatedAt: at.Add(time.Duration(i%3) * time.Second), UpdatedAt: at}
		switch i {
		case 7:
			c.Status, c.SealedToken = connection.StatusRevoked, nil
		case 9:
			c.EndUserID = ptr("u2")
		}
		if err := w.store.Create(ctx, c, connection.Change{}); err != nil {
			t.Fatal(err)
		}
	}
	live, err := w.svc.Live(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range live {
		if c.Status == connection.StatusRevoked || *c.EndUserID != "u1" || seen[c.ID] {
			t.Fatalf("Live returned %s (%s, %s) or twice", c.ID, c.Status, *c.EndUserID)
		}
		seen[c.ID] = true
	}
	if len(live) != 203 {
		t.Fatalf("Live returned %d connections, want 203", len(live))
	}
}

func ptr(s string) *string { return &s }

package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/mmconnect/mmconnect/api"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/outbound"
	"github.com/mmconnect/mmconnect/internal/secret"
	"github.com/mmconnect/mmconnect/internal/store"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

const token = "abcdefghijkmnopqrstuvwxyza"

var (
	secretOld = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	secretNew = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 24))
)

// receiver is an app's webhook endpoint: it verifies each delivery with the
// Standard Webhooks library, fails the first failFirst requests, and keeps
// what it accepted.
type receiver struct {
	t         *testing.T
	mu        sync.Mutex
	failFirst int
	answer    int // status once failures are spent; 0 means 204
	requests  int
	accepted  []received
	verifiers []*standardwebhooks.Webhook
}

type received struct {
	ID   string
	Body map[string]any
	Raw  string
}

func newReceiver(t *testing.T, secrets ...string) (*receiver, *httptest.Server) {
	r := &receiver{t: t}
	for _, s := range secrets {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatal(err)
		}
		r.verifiers = append(r.verifiers, wh)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	for i, wh := range r.verifiers {
		// The timestamp is the test clock's, not now: check the signature.
		if err := wh.VerifyIgnoringTimestamp(body, req.Header); err != nil {
			r.t.Errorf("delivery %s does not verify with secret %d: %v", req.Header.Get("webhook-id"), i+1, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if r.requests <= r.failFirst {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if r.answer != 0 {
		w.Header().Set("Location", "/elsewhere")
		w.WriteHeader(r.answer)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		r.t.Errorf("body is not JSON: %s", body)
	}
	r.accepted = append(r.accepted, received{ID: req.Header.Get("webhook-id"), Body: m, Raw: string(body)})
	w.WriteHeader(http.StatusNoContent)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type verifier struct{ reject bool }

func (v *verifier) Verify(context.Context, string, string) (connection.Identity, error) {
	if v.reject {
		return connection.Identity{}, &connection.UpstreamError{Code: connection.CodeTokenRejected, Message: "rejected"}
	}
	return connection.Identity{User: connection.MattermostUser{ID: "b95oboh88frobdioocwwdoqhdc", Username: "alice"}, ServerVersion: "11.4.0"}, nil
}

type setup struct {
	svc   *connection.Service
	hooks *webhook.Service
	store *store.Store
	clock *clock
	v     *verifier
}

func newSetup(t *testing.T, url string, secrets string) *setup {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{now: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}
	sealer, _ := secret.NewSealer(bytes.Repeat([]byte{1}, 32))
	v := &verifier{}
	svc := connection.NewService(st, v, sealer, connection.WithClock(clk.Now), connection.WithEvents(true))
	keys, err := webhook.Secrets(secrets)
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := webhook.NewService(st, webhook.Options{URL: url, Secrets: keys, Render: api.WebhookBody, Now: clk.Now,
		Client: outbound.NewClient(outbound.Options{Timeout: webhook.AttemptTimeout})})
	if err != nil {
		t.Fatal(err)
	}
	return &setup{svc: svc, hooks: hooks, store: st, clock: clk, v: v}
}

// drain runs delivery rounds, moving the clock an hour between them, until
// nothing is pending (at most 80 rounds).
func (s *setup) drain(t *testing.T) {
	t.Helper()
	for range 80 {
		if _, err := s.hooks.DeliverDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		st := webhook.StatusPending
		p, err := s.hooks.List(context.Background(), webhook.Query{Status: &st})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Deliveries) == 0 {
			return
		}
		s.clock.Advance(time.Hour)
	}
	t.Fatal("deliveries still pending after 80 rounds")
}

// A receiver that fails three times, then recovers, gets each event once,
// in order per connection, signed with every secret, never with a token.
func TestDeliveriesArriveOnceInOrder(t *testing.T) {
	ctx := context.Background()
	rcv, srv := newReceiver(t, secretOld, secretNew)
	rcv.failFirst = 3
	s := newSetup(t, srv.URL+"/hooks", secretOld+" "+secretNew)

	end := "u1"
	c, _, err := s.svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: token, EndUserID: &end})
	if err != nil {
		t.Fatal(err)
	}
	s.v.reject = true
	if _, err := s.svc.Verify(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	s.v.reject = false
	if _, err := s.svc.Verify(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: "bcdefghijkmnopqrstuvwxyzay", EndUserID: &end}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.Revoke(ctx, c.ID, false); err != nil {
		t.Fatal(err)
	}
	s.drain(t)

	want := []string{"connection.created", "connection.invalid", "connection.recovered", "connection.reconnected", "connection.revoked"}
	if len(rcv.accepted) != len(want) {
		t.Fatalf("receiver accepted %d deliveries, want %d", len(rcv.accepted), len(want))
	}
	seen := map[string]bool{}
	for i, got := range rcv.accepted {
		if seen[got.ID] {
			t.Errorf("delivery %s accepted twice", got.ID)
		}
		seen[got.ID] = true
		if got.Body["type"] != want[i] || got.Body["sequence"] != float64(i+1) {
			t.Errorf("delivery %d: type %v sequence %v; want %s, %d", i, got.Body["type"], got.Body["sequence"], want[i], i+1)
		}
		if data, _ := got.Body["data"].(map[string]any); data["id"] != c.ID {
			t.Errorf("delivery %d is about %v, want %s", i, data["id"], c.ID)
		}
		if strings.Contains(got.Raw, token) || strings.Contains(got.Raw, "bcdefghijkmnopqrstuvwxyzay") || strings.Contains(got.Raw, "mmc1.") {
			t.Errorf("delivery %d carries a token: %s", i, got.Raw)
		}
	}
	if rcv.requests != len(want)+3 {
		t.Errorf("receiver saw %d requests; want %d (three failures, then each event once)", rcv.requests, len(want)+3)
	}
	d, err := s.store.GetDelivery(ctx, rcv.accepted[0].ID)
	if err != nil || d.Status != webhook.StatusDelivered || d.Attempts != 4 || d.LastResponseStatus != 204 {
		t.Fatalf("first delivery: %+v, %v; want delivered after 4 attempts with 204", d, err)
	}
}

// A receiver that never answers 2xx gets retried for 24 h; then the
// delivery fails for good, lets the next one through, and can be retried
// by hand. A redirect is a failure and is not followed.
func TestDeliveryFailsAfterRetryWindowAndCanBeRetried(t *testing.T) {
	ctx := context.Background()
	rcv, srv := newReceiver(t, secretOld)
	rcv.answer = http.StatusFound
	s := newSetup(t, srv.URL, secretOld)
	end := "u1"
	c, _, err := s.svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: token, EndUserID: &end})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.Revoke(ctx, c.ID, false); err != nil {
		t.Fatal(err)
	}
	s.drain(t)
	failed := webhook.StatusFailed
	p, err := s.hooks.List(ctx, webhook.Query{Status: &failed})
	if err != nil || len(p.Deliveries) != 2 {
		t.Fatalf("failed deliveries: %d, %v; want both", len(p.Deliveries), err)
	}
	first, second := p.Deliveries[0], p.Deliveries[1]
	if first.Event.Sequence > second.Event.Sequence {
		first, second = second, first
	}
	if first.Event.Type != connection.EventCreated || first.LastResponseStatus != http.StatusFound || first.Attempts < 5 {
		t.Fatalf("first failed delivery: %+v", first)
	}
	if age := first.SettledAt.Sub(first.CreatedAt); age < 24*time.Hour || age > 25*time.Hour {
		t.Fatalf("failed after %s; want about 24 h", age)
	}
	if second.Attempts < 5 || second.LastAttemptAt.Sub(*first.SettledAt) < 24*time.Hour {
		t.Fatalf("the second event did not get its own 24 h after the first failed: %+v", second)
	}
	if rcv.requests != first.Attempts+second.Attempts {
		t.Fatalf("receiver saw %d requests for %d attempts (a redirect was followed?)", rcv.requests, first.Attempts+second.Attempts)
	}

	if _, err := s.hooks.Retry(ctx, second.Event.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.hooks.Retry(ctx, second.Event.ID); err == nil {
		t.Fatal("retrying a pending delivery succeeded; want ErrNotFailed")
	}
	rcv.mu.Lock()
	rcv.answer = 0
	rcv.mu.Unlock()
	s.drain(t)
	if len(rcv.accepted) != 1 || rcv.accepted[0].Body["type"] != "connection.revoked" {
		t.Fatalf("after a manual retry the receiver accepted %v", rcv.accepted)
	}
}

// A ping is delivered at once with an empty data object.
func TestPing(t *testing.T) {
	ctx := context.Background()
	rcv, srv := newReceiver(t, secretOld)
	s := newSetup(t, srv.URL, secretOld)
	d, err := s.hooks.Ping(ctx)
	if err != nil || d.Status != webhook.StatusPending {
		t.Fatalf("Ping: %+v, %v", d, err)
	}
	select {
	case <-s.hooks.Wake():
	default:
		t.Fatal("Ping did not wake the delivery loop")
	}
	if n, err := s.hooks.DeliverDue(ctx); n != 1 || err != nil {
		t.Fatalf("DeliverDue: %d, %v", n, err)
	}
	if len(rcv.accepted) != 1 || rcv.accepted[0].Body["type"] != "ping" || len(rcv.accepted[0].Body["data"].(map[string]any)) != 0 {
		t.Fatalf("receiver got %+v; want one ping with empty data", rcv.accepted)
	}
}

func TestSecrets(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{secretOld, true},
		{secretOld + "  " + secretNew, true},
		{"whsec_", false},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false},
		{"whsec_not*base64", false},
		{"whsec_" + base64.StdEncoding.EncodeToString([]byte("short")), false},
		{secretOld + " whsec_x", false},
		{"", false},
	} {
		_, err := webhook.Secrets(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Secrets(%.20q…) err = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "whsec_AQ") {
			t.Errorf("error repeats a secret: %v", err)
		}
	}
}

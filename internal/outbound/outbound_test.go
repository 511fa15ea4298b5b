package outbound_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/outbound"
)

// Every client built with one HostLimit shares it: however many callers
// ask at once, no more than the limit are in flight to one host, and a
// request over the limit waits, within its own deadline.
func TestHostLimitBoundsRequestsInFlight(t *testing.T) {
	var inFlight, peak atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
	}))
	defer srv.Close()

	limit := outbound.NewHostLimit(3)
	// Two clients, as the check and the webhook dispatcher are.
	clients := []*http.Client{
		outbound.NewClient(outbound.Options{Timeout: 5 * time.Second, HostLimit: limit}),
		outbound.NewClient(outbound.Options{Timeout: 5 * time.Second, HostLimit: limit}),
	}
	const callers = 10
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := clients[i%2].Get(srv.URL)
			if err == nil {
				resp.Body.Close()
			}
			errs[i] = err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for limit.InFlight(srv.Listener.Addr().String()) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// One more caller with a short deadline waits for a slot and gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	_, err := clients[0].Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a request over the limit: err = %v, want its deadline", err)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if got := peak.Load(); got != 3 {
		t.Fatalf("at most %d requests were in flight; want exactly the limit, 3", got)
	}
	if got := limit.InFlight(srv.Listener.Addr().String()); got != 0 {
		t.Fatalf("%d slots still held after every body was closed", got)
	}
}

// Redirects come back to the caller; they are never followed.
func TestNoRedirectsFollowed(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "/next", http.StatusFound)
	}))
	defer srv.Close()
	resp, err := outbound.NewClient(outbound.Options{}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits.Load() != 1 {
		t.Fatalf("status %d after %d requests; want the 302 itself after 1", resp.StatusCode, hits.Load())
	}
}

// A fenced client refuses loopback, unfenced (the operator's webhook URL)
// does not.
func TestFence(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	_, err := outbound.NewClient(outbound.Options{Fenced: true}).Get(srv.URL)
	if !outbound.IsRefused(err) {
		t.Fatalf("fenced client to loopback: err = %v, want refused", err)
	}
	resp, err := outbound.NewClient(outbound.Options{}).Get(srv.URL)
	if err != nil {
		t.Fatalf("unfenced client to loopback: %v", err)
	}
	resp.Body.Close()
}

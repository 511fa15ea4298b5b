package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/metrics"
)

// cacheHits reads the row cache's counters as the server's /metrics
// writes them: hits over all reads, of both caches, between two scrapes.
func TestCacheHits(t *testing.T) {
	reads := map[string]uint64{}
	m := metrics.New("test")
	m.WatchRowCache(func(cache, result string) uint64 { return reads[cache+" "+result] })
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	before := scrape(http.DefaultClient, srv.URL, "")
	for k, v := range map[string]uint64{"connection hit": 30, "connection miss": 5, "connection stale": 3, "page hit": 2, "page stale": 2} {
		reads[k] = v
	}
	hits, all := cacheHits(before, scrape(http.DefaultClient, srv.URL, ""))
	if hits != 32 || all != 42 {
		t.Fatalf("cacheHits = %v of %v, want 32 of 42", hits, all)
	}
	if hits, all := cacheHits(before, before); hits != 0 || all != 0 {
		t.Fatalf("cacheHits between one scrape = %v of %v", hits, all)
	}
}

// created201 is the series the server's /metrics writes for a create
// answered 201 (wrk counts any 2xx, so the bench counts creates by it).
func TestCreatedSeries(t *testing.T) {
	m := metrics.New("test")
	m.ObserveRequest("/connections", "POST", http.StatusCreated, false, time.Millisecond)
	m.ObserveRequest("/connections", "POST", http.StatusUnprocessableEntity, false, time.Millisecond)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	if got := scrape(http.DefaultClient, srv.URL, "")[created201]; got != 1 {
		t.Fatalf("%s = %v, want 1", created201, got)
	}
}

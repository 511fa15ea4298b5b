// Package metrics exposes mmconnect to Prometheus: requests by route and
// status with their latency, upstream checks by outcome, database pool
// statistics, connections by status (re-read from the database, so right
// with any number of replicas), rate-limit refusals and webhook
// deliveries.
package metrics

import (
	"context"
	"database/sql"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// Metrics holds mmconnect's collectors in a registry of its own.
type Metrics struct {
	registry          *prometheus.Registry
	requests          *prometheus.HistogramVec
	upstreamChecks    *prometheus.HistogramVec
	rateLimited       *prometheus.CounterVec
	webhookDeliveries *prometheus.CounterVec
	connections       *prometheus.GaugeVec
}

// New registers every collector, with the Go runtime's and the process's,
// and mmconnect_build_info, which names the version running (what a
// rollout across replicas shows).
func New(version string) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mmconnect_http_request_duration_seconds", Help: "HTTP requests by route, method, status and whether the answer was Mattermost's own, passed through by the proxy (upstream), with their latency.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "status", "upstream"}),
		upstreamChecks: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mmconnect_upstream_check_duration_seconds", Help: "Checks of tokens against Mattermost servers by outcome, with their latency.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"outcome"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mmconnect_rate_limited_total", Help: "Requests refused by a rate limit, by the limit.",
		}, []string{"limit"}),
		webhookDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mmconnect_webhook_delivery_attempts_total", Help: "Webhook delivery attempts by outcome (delivered, pending: will retry, failed: for good).",
		}, []string{"outcome"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mmconnect_connections", Help: "Stored connections by status, re-read from the database every few seconds.",
		}, []string{"status"}),
	}
	m.registry.MustRegister(m.requests, m.upstreamChecks, m.rateLimited, m.webhookDeliveries, m.connections,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mmconnect_build_info",
			Help:        "Always 1; its label names the version of mmconnect running.",
			ConstLabels: prometheus.Labels{"version": version}}, func() float64 { return 1 }))
	// Every outcome a check can have is a series from the start: an alert
	// on the rate of rejected tokens or timeouts reads 0 until the first
	// one, not nothing (a series that appears only when something happens
	// is missed by rate() and absent()).
	for _, o := range connection.CheckOutcomes() {
		m.upstreamChecks.WithLabelValues(o)
	}
	return m
}

// ExpectRateLimits makes the refusal count of each limit in force a
// series from the start (0), as New does for the checks' outcomes.
func (m *Metrics) ExpectRateLimits(limits ...string) {
	for _, l := range limits {
		m.rateLimited.WithLabelValues(l)
	}
}

// ExpectWebhookOutcomes makes the count of each delivery outcome a series
// from the start (0), when webhooks are on.
func (m *Metrics) ExpectWebhookOutcomes(outcomes ...string) {
	for _, o := range outcomes {
		m.webhookDeliveries.WithLabelValues(o)
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// WatchDB adds the statistics of a database pool (open, in use, waits).
func (m *Metrics) WatchDB(db *sql.DB, name string) {
	m.registry.MustRegister(collectors.NewDBStatsCollector(db, name))
}

// WatchWriteBatches adds SQLite's group-commit totals, read from stats at
// each scrape: batches committed, writes they held, and the writer's busy
// time (rate(writes)/rate(batches) is the mean batch size).
func (m *Metrics) WatchWriteBatches(stats func() (batches, writes uint64, busy time.Duration)) {
	m.registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mmconnect_db_write_batches_total",
			Help: "Write transactions the SQLite group commit committed (each one COMMIT and one fsync)."},
			func() float64 { b, _, _ := stats(); return float64(b) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mmconnect_db_batched_writes_total",
			Help: "Callers' writes the SQLite group commit ran, each in a savepoint of a batch."},
			func() float64 { _, w, _ := stats(); return float64(w) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mmconnect_db_write_batch_busy_seconds_total",
			Help: "Time the one SQLite writer spent running and committing batches."},
			func() float64 { _, _, d := stats(); return d.Seconds() }),
	)
}

// WatchRowCache adds the SQLite row cache's reads, by cache (connection:
// reads by id; page: listing pages) and result (hit; miss: not held;
// stale: held, but read before a later commit that may have changed it),
// read from reads at each scrape. Stale reads that outnumber hits mean
// commits come faster than the same rows are read again.
func (m *Metrics) WatchRowCache(reads func(cache, result string) uint64) {
	for _, cache := range []string{"connection", "page"} {
		for _, result := range []string{"hit", "miss", "stale"} {
			m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mmconnect_db_row_cache_reads_total",
				Help:        "Reads through the SQLite row cache by cache (connection, page) and result (hit; miss: not held; stale: held, but read before a later commit that may have changed it).",
				ConstLabels: prometheus.Labels{"cache": cache, "result": result}},
				func() float64 { return float64(reads(cache, result)) }))
		}
	}
}

// WatchLog adds the log lines lost to failed writes of the log's output
// (a full disk, a closed pipe), read from lost at each scrape: the log
// cannot report its own loss.
func (m *Metrics) WatchLog(lost func() uint64) {
	m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mmconnect_log_lines_lost_total",
		Help: "Log lines lost because writing them to the log's output failed."},
		func() float64 { return float64(lost()) }))
}

// ObserveRequest counts one HTTP request under its route's name (the
// caller names it, unmatched paths included); upstream is true for an
// answer that is Mattermost's own, passed through by the proxy, so that
// its 5xx are not taken for mmconnect's.
func (m *Metrics) ObserveRequest(route, method string, status int, upstream bool, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status), strconv.FormatBool(upstream)).Observe(d.Seconds())
}

// RateLimited counts one refusal by limit.
func (m *Metrics) RateLimited(limit string) { m.rateLimited.WithLabelValues(limit).Inc() }

// WebhookAttempt counts one delivery attempt by outcome.
func (m *Metrics) WebhookAttempt(outcome string) { m.webhookDeliveries.WithLabelValues(outcome).Inc() }

// SetConnections sets the gauge from a count by status.
func (m *Metrics) SetConnections(byStatus map[string]int64) {
	for _, st := range []connection.Status{connection.StatusActive, connection.StatusInvalid, connection.StatusRevoked} {
		m.connections.WithLabelValues(string(st)).Set(float64(byStatus[string(st)]))
	}
}

// Verifier counts and times every check v makes, by outcome.
func (m *Metrics) Verifier(v connection.Verifier) connection.Verifier {
	return &timedVerifier{next: v, hist: m.upstreamChecks}
}

type timedVerifier struct {
	next connection.Verifier
	hist *prometheus.HistogramVec
}

func (t *timedVerifier) Verify(ctx context.Context, serverURL, token string) (connection.Identity, error) {
	start := time.Now()
	ident, err := t.next.Verify(ctx, serverURL, token)
	t.hist.WithLabelValues(connection.CheckOutcome(err)).Observe(time.Since(start).Seconds())
	return ident, err
}

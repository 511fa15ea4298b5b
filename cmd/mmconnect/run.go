package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"time"

	"github.com/mmconnect/mmconnect"
	"github.com/mmconnect/mmconnect/api"
	"github.com/mmconnect/mmconnect/internal/audit"
	"github.com/mmconnect/mmconnect/internal/config"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/idempotency"
	"github.com/mmconnect/mmconnect/internal/logging"
	"github.com/mmconnect/mmconnect/internal/mattermost"
	"github.com/mmconnect/mmconnect/internal/metrics"
	"github.com/mmconnect/mmconnect/internal/outbound"
	"github.com/mmconnect/mmconnect/internal/secret"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/store"
	"github.com/mmconnect/mmconnect/internal/tracing"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3").
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// shutdownGrace bounds how long requests in flight may take to finish.
const shutdownGrace = 30 * time.Second

// run is the whole program, with its world passed in so tests can run it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "serve":
		return serve(ctx, getenv, stderr)
	case "version":
		_, err := fmt.Fprintln(stdout, "mmconnect", buildVersion())
		return err
	case "healthcheck":
		return healthcheck(ctx, getenv)
	case "migrate":
		return migrateOnly(ctx, getenv, stderr)
	case "rotate-keys":
		return rotateKeys(ctx, getenv, stdout, stderr)
	case "backup":
		if len(args) != 2 {
			return errors.New("usage: mmconnect backup <file>")
		}
		return backup(ctx, getenv, args[1], stdout)
	case "help", "-h", "--help":
		_, err := fmt.Fprintln(stdout, usage)
		return err
	}
	return fmt.Errorf("unknown command %q (%s)", cmd, usage)
}

const usage = "usage: mmconnect [serve|migrate|rotate-keys|backup <file>|version|healthcheck]"

// openStore opens the configured database and brings its schema up to date.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (*store.Store, error) {
	if cfg.PostgresURL != "" {
		return store.OpenPostgres(ctx, cfg.PostgresURL, store.PostgresOptions{
			MaxConns: cfg.DBMaxConns, StatementTimeout: cfg.DBStatementTimeout}, log)
	}
	return store.OpenSQLite(ctx, cfg.SQLitePath, log)
}

// storeFromEnv loads the configuration and opens the database (migrating
// it), for the commands that work on the database alone.
func storeFromEnv(ctx context.Context, getenv func(string) string, logOut io.Writer) (config.Config, *slog.Logger, *store.Store, error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return config.Config{}, nil, nil, fmt.Errorf("configuration: %w", err)
	}
	log := logging.New(logOut, cfg.LogLevel)
	st, err := openStore(ctx, cfg, log)
	return cfg, log, st, err
}

// migrateOnly applies pending migrations and exits, for deployments that
// migrate in a release step before rolling replicas.
func migrateOnly(ctx context.Context, getenv func(string) string, logOut io.Writer) error {
	_, log, st, err := storeFromEnv(ctx, getenv, logOut)
	if err != nil {
		return err
	}
	log.Info("schema is up to date", "database", st.Dialect())
	return st.Close()
}

// backup copies the SQLite database while the server may be serving.
func backup(ctx context.Context, getenv func(string) string, dest string, stdout io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if cfg.SQLitePath == "" {
		return errors.New("backup copies the SQLite database; back up PostgreSQL with pg_dump or your provider's snapshots")
	}
	if err := store.BackupSQLite(ctx, cfg.SQLitePath, dest); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "backed up %s to %s (keep the encryption key with it: the tokens cannot be opened without it)\n", cfg.SQLitePath, dest)
	return err
}

func serve(ctx context.Context, getenv func(string) string, logOut io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	// Access lines may wait to go out together; every other line goes at
	// once, with the held ones before it. Registered first, the Close runs
	// last, after the shutdown's own lines.
	stream := logging.NewStream(logOut, cfg.AccessLogFlushInterval)
	defer stream.Close()
	log := logging.New(stream, cfg.LogLevel)
	log.Info("starting", "version", buildVersion(), "config", cfg)

	apiKeys, err := loadAPIKeys(cfg, log)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close database", "err", err)
		}
		log.Info("database closed")
	}()
	sealer, err := loadSealer(ctx, cfg, st, log)
	if err != nil {
		return err
	}

	tracer, err := startTracing(ctx, getenv, log)
	if err != nil {
		return err
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracer.Shutdown(flushCtx); err != nil {
			log.Warn("send the last spans", "err", err)
		}
	}()
	st.Trace(tracer.Tracer())
	var traceClients outbound.Trace
	if tracer != nil {
		traceClients = outbound.Trace{Provider: tracer.Provider, Propagator: tracer.Propagator}
	}

	hostLimit := outbound.NewHostLimit(cfg.UpstreamHostConcurrency)
	opts := mattermost.Options{Trace: traceClients, Timeout: cfg.UpstreamTimeout, AllowedNetworks: cfg.AllowedNetworks, HostLimit: hostLimit, AllowHTTP: cfg.AllowHTTP,
		IdleConnsPerHost: cfg.UpstreamHostConcurrency}
	if cfg.UpstreamCAFile != "" {
		if opts.RootCAs, err = mattermost.LoadRootCAs(cfg.UpstreamCAFile); err != nil {
			return fmt.Errorf("MMCONNECT_UPSTREAM_CA_FILE: %w", err)
		}
	}
	mm := mattermost.New(opts)
	meters := metrics.New(buildVersion())
	meters.WatchLog(stream.Lost)
	meters.WatchDB(st.SQLDB(), "mmconnect")
	if st.ReadDB() != st.SQLDB() {
		meters.WatchDB(st.ReadDB(), "mmconnect_read")
	}
	if _, ok := st.WriteBatchStats(); ok {
		meters.WatchWriteBatches(func() (uint64, uint64, time.Duration) {
			b, _ := st.WriteBatchStats()
			return b.Batches, b.Writes, b.Busy
		})
	}
	if _, _, ok := st.RowCacheStats(); ok {
		meters.WatchRowCache(func(cache, result string) uint64 {
			byID, pages, _ := st.RowCacheStats()
			r := map[string]store.CacheReads{"connection": byID, "page": pages}[cache]
			return map[string]uint64{"hit": r.Hits, "miss": r.Misses, "stale": r.Stale}[result]
		})
	}
	svc := connection.NewService(st, tracer.Verifier(meters.Verifier(mm)), sealer,
		connection.WithAllowHTTP(cfg.AllowHTTP),
		connection.WithEvents(cfg.WebhookURL != ""),
		connection.WithRevoker(mm, cfg.RevokeUpstream),
		connection.WithRecheck(connection.RecheckOptions{Interval: cfg.ReverifyInterval, Concurrency: cfg.ReverifyConcurrency}),
		connection.WithRetention(cfg.RevokedRetention),
		connection.WithMaxPerEndUser(cfg.MaxConnectionsPerEndUser))
	if err := svc.CheckSealingKeys(ctx, sealer.KeyIDs()); err != nil {
		return err
	}
	hooks, err := webhook.NewService(st, webhook.Options{
		URL:     cfg.WebhookURL,
		Secrets: cfg.WebhookSecrets,
		Client:  outbound.NewClient(outbound.Options{Timeout: webhook.AttemptTimeout, HostLimit: hostLimit}),
		Render:  api.WebhookBody,
		Observe: meters.WebhookAttempt,
	})
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	if hooks.Enabled() {
		for _, st := range webhook.Statuses() {
			meters.ExpectWebhookOutcomes(string(st))
		}
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	if cfg.PublicURLDefaulted {
		cfg.PublicURL = "http://localhost:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	}
	if cfg.PublicURLInClear() {
		log.Warn("MMCONNECT_PUBLIC_URL is plain http:// to another host: personal access tokens typed into the Connect page would cross the network in clear; use https://",
			"public_url", cfg.PublicURL)
	}
	if cfg.MetricsOpenToOthers() {
		log.Warn("MMCONNECT_METRICS_ADDR serves /metrics without a token on an address other machines may reach: anyone who reaches it reads the metrics; set MMCONNECT_METRICS_TOKEN unless only your monitoring can reach it",
			"metrics_addr", cfg.MetricsAddr)
	}
	keys := idempotency.NewService(st, sealer, nil)
	trail := audit.NewService(st, cfg.AuditRetention, nil)
	deps := api.Deps{
		Connections:      svc,
		Sessions:         session.NewService(st, cfg.SessionTTL, nil),
		APIKeys:          secret.NewKeySet(apiKeys),
		Logger:           log,
		AccessLog:        logging.New(stream.Deferred(), cfg.LogLevel),
		OpenAPI:          mmconnect.OpenAPI(),
		PublicURL:        cfg.PublicURL,
		AllowedOrigins:   cfg.AllowedOrigins,
		AllowHTTP:        cfg.AllowHTTP,
		AppName:          cfg.AppName,
		HelpURL:          cfg.HelpURL,
		TrustedProxies:   cfg.TrustedProxies,
		Idempotency:      keys,
		Audit:            trail,
		Metrics:          meters,
		MetricsToken:     cfg.MetricsToken,
		MetricsElsewhere: cfg.MetricsAddr != "",
		Proxy: &api.ProxyOptions{
			Transport: outbound.NewClient(outbound.Options{Timeout: cfg.ProxyTimeout, Fenced: true, AllowedNetworks: cfg.AllowedNetworks,
				RootCAs: opts.RootCAs, HostLimit: hostLimit, MaxIdleConnsPerHost: cfg.UpstreamHostConcurrency, Trace: traceClients}).Transport,
			MaxBody:         cfg.ProxyMaxBody,
			AllowTokenPaths: cfg.ProxyAllowTokenPaths,
			Timeout:         cfg.ProxyTimeout,
		},
	}
	if tracer != nil {
		deps.Tracer, deps.Propagator = tracer.Tracer(), tracer.Propagator
	}
	if cfg.RateLimits {
		deps.RateLimits = &api.RateLimits{
			PerAPIKey:  api.Rate(cfg.RatePerAPIKey),
			PerSession: api.Rate(cfg.RatePerSession),
			PerIP:      api.Rate(cfg.RatePerClientIP),
		}
	}
	if hooks.Enabled() {
		deps.Webhooks = hooks
	}
	handler := api.NewServer(deps)
	// A create waits on the upstream check; leave room for it.
	srv := httpServer(handler, cfg.UpstreamTimeout+20*time.Second, log)
	serveErr := make(chan error, 2)
	// The metrics listener is up before the API says it listens, so
	// whoever waits for "listening" (a supervisor, a test) finds both.
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)
		}
		msrv := httpServer(api.NewMetricsServer(meters, cfg.MetricsToken, log), metricsWriteTimeout, log)
		go func() { serveErr <- msrv.Serve(mln) }()
		defer msrv.Close()
		log.Info("serving metrics", "addr", mln.Addr().String())
	}
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "public_url", cfg.PublicURL)

	bgCtx, stopBackground := context.WithCancel(context.Background())
	background := startBackground(bgCtx, svc, hooks, keys, trail, log)
	background.Add(1)
	go func() {
		defer background.Done()
		refreshConnectionGauge(bgCtx, st, meters, log)
	}()

	select {
	case err := <-serveErr:
		stopBackground()
		background.Wait()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests in flight")
	// Background work stops first: a check or delivery in flight finishes
	// or is abandoned (an abandoned one is due again later; nothing is lost).
	stopBackground()
	background.Wait()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// metricsWriteTimeout bounds writing a scrape's answer, which the
// handler builds in memory first.
const metricsWriteTimeout = 30 * time.Second

// httpServer is how both listeners (the API, and metrics on
// MMCONNECT_METRICS_ADDR) serve h: every wait is bounded (a request's
// headers, its body, writing the answer, an idle keep-alive connection), so
// a client that stops sending or reading, or keeps a connection open doing
// nothing, holds a goroutine and its buffers only that long. writeTimeout
// is the longest the handler may take to answer, writing included.
func httpServer(h http.Handler, writeTimeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    api.HardMaxHeaderBytes, // the API answers past api.MaxHeaderBytes itself

		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// startTracing starts OpenTelemetry tracing when the environment names an
// OTLP endpoint (see the tracing package), and returns nil otherwise:
// tracing off builds nothing. Errors: the exporter's settings are refused.
func startTracing(ctx context.Context, getenv func(string) string, log *slog.Logger) (*tracing.Tracing, error) {
	if !tracing.Enabled(getenv) {
		return nil, nil
	}
	t, err := tracing.Start(ctx, getenv, buildVersion(), outbound.NewClient(outbound.Options{Timeout: 10 * time.Second}))
	if err != nil {
		return nil, err
	}
	endpoint := cmp.Or(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	if u, err := url.Parse(endpoint); err == nil {
		endpoint = u.Redacted() // a password in the URL is not logged
	}
	log.Info("tracing: sending spans over OTLP/HTTP", "endpoint", endpoint)
	return t, nil
}

// loadAPIKeys takes the API keys from the configuration, or from the key
// file in the data dir, creating it on first start. Paths are logged,
// never keys.
func loadAPIKeys(cfg config.Config, log *slog.Logger) ([]string, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("MMCONNECT_DATA_DIR: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		log.Warn("could not make the data dir private (0700)", "path", cfg.DataDir, "err", err)
	}
	if cfg.APIKeyFile == "" {
		return cfg.APIKeys, nil
	}
	key, created, err := secret.LoadOrCreateFile(cfg.APIKeyFile, secret.NewAPIKey)
	if err != nil {
		return nil, fmt.Errorf("API key file: %w", err)
	}
	if len(key) < config.MinAPIKeyLength {
		return nil, fmt.Errorf("API key file %s: the key is shorter than %d characters", cfg.APIKeyFile, config.MinAPIKeyLength)
	}
	if created {
		log.Info("generated an API key; read it from the file", "path", cfg.APIKeyFile)
	} else {
		log.Info("using the API key in the file", "path", cfg.APIKeyFile)
	}
	return []string{key}, nil
}

// loadSealer takes the encryption keys from the configuration, or from the
// key file in the data dir. A key file is generated only for a database
// that holds no connection yet: a lost key is never silently replaced by a
// new one that opens nothing.
func loadSealer(ctx context.Context, cfg config.Config, st *store.Store, log *slog.Logger) (*secret.Sealer, error) {
	keys := cfg.EncryptionKeys
	if cfg.EncryptionKeyFile != "" {
		v, err := secret.ReadKeyFile(cfg.EncryptionKeyFile)
		created := false
		if errors.Is(err, os.ErrNotExist) {
			has, herr := st.HasConnections(ctx)
			if herr != nil {
				return nil, herr
			}
			if has {
				return nil, fmt.Errorf("encryption key file %s is missing but the database holds connections: restore the file from your backup "+
					"(or set MMCONNECT_ENCRYPTION_KEYS); a new key could open none of the stored tokens", cfg.EncryptionKeyFile)
			}
			v, created, err = secret.CreateKeyFile(cfg.EncryptionKeyFile, secret.NewEncryptionKey())
		}
		if err != nil {
			return nil, fmt.Errorf("encryption key file: %w", err)
		}
		k, err := secret.ParseKey(v)
		if err != nil {
			return nil, fmt.Errorf("encryption key file %s: %w", cfg.EncryptionKeyFile, err)
		}
		if created {
			log.Info("generated an encryption key; back it up with the database", "path", cfg.EncryptionKeyFile, "key_id", secret.KeyID(k))
		}
		keys = [][]byte{k}
	}
	sealer, err := secret.NewSealer(keys[0], keys[1:]...)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	return sealer, nil
}

// rotateKeys re-seals every stored token under the first configured key
// while servers keep serving, then reports what each key id still seals.
func rotateKeys(ctx context.Context, getenv func(string) string, stdout, logOut io.Writer) error {
	cfg, log, st, err := storeFromEnv(ctx, getenv, logOut)
	if err != nil {
		return err
	}
	defer st.Close()
	sealer, err := loadSealer(ctx, cfg, st, log)
	if err != nil {
		return err
	}
	svc := connection.NewService(st, nil, sealer)
	n, use, err := svc.RotateKeys(ctx, 200)
	if err != nil {
		return fmt.Errorf("rotate keys (run it again to resume): %w", err)
	}
	fmt.Fprintf(stdout, "re-sealed %d value(s) under key id %s\n", n, sealer.Primary())
	ids := make([]string, 0, len(use))
	for id := range use {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(stdout, "key id %s seals %d value(s)\n", id, use[id])
	}
	for _, id := range sealer.KeyIDs() {
		if use[id] == 0 && id != sealer.Primary() {
			fmt.Fprintf(stdout, "key id %s seals nothing: it can be retired\n", id)
		}
	}
	return nil
}

// healthcheck asks the local server's /healthz, for container health checks
// in an image without curl.
func healthcheck(ctx context.Context, getenv func(string) string) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	_, port, _ := net.SplitHostPort(cfg.Addr)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort("127.0.0.1", port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered %d", resp.StatusCode)
	}
	return nil
}

package api_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mmconnect/mmconnect"
	"github.com/mmconnect/mmconnect/api"
	"github.com/mmconnect/mmconnect/internal/audit"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/idempotency"
	"github.com/mmconnect/mmconnect/internal/logtest"
	"github.com/mmconnect/mmconnect/internal/mattermost"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
	"github.com/mmconnect/mmconnect/internal/metrics"
	"github.com/mmconnect/mmconnect/internal/outbound"
	"github.com/mmconnect/mmconnect/internal/secret"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/store"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// contract is openapi.yaml, loaded and validated once for all tests.
var contract = sync.OnceValues(func() (*openapi3.T, error) {
	for _, ct := range []string{"text/html", "text/css", "text/javascript", "image/svg+xml"} {
		openapi3filter.RegisterBodyDecoder(ct, func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			b, err := io.ReadAll(r)
			return string(b), err
		})
	}
	doc, err := openapi3.NewLoader().LoadFromData(mmconnect.OpenAPI())
	if err != nil {
		return nil, err
	}
	return doc, doc.Validate(context.Background())
})

// harness is the real router wired to a real SQLite store, real sealing and
// the real Mattermost client, talking to a fake Mattermost over TLS.
type harness struct {
	t       testing.TB
	handler http.Handler
	mm      *mattermosttest.Server
	key     string
	logs    *logtest.Buffer
	// spans holds the requests' server spans, with harnessOptions.traced.
	spans    *tracetest.InMemoryExporter
	dataDir  string
	router   routers.Router
	sessions *session.Service
	// publicURL is what the API was told; lastConnectURL the newest session's page.
	publicURL      string
	lastConnectURL string
	// hooks delivers to receiver, when webhooks are on.
	hooks    *webhook.Service
	receiver *httptest.Server
	now      time.Time
	clockMu  sync.Mutex
	// secrets are strings that must never appear in a log line.
	secrets []string
}

const (
	tokenA   = "abcdefghijkmnopqrstuvwxyza"
	tokenA2  = "bcdefghijkmnopqrstuvwxyzay"
	tokenB   = "zyxwvutsrqponmkjihgfedcbay"
	userA    = "b95oboh88frobdioocwwdoqhdc"
	userB    = "sijnzjnrq7dfmy7u4f6m651gpr"
	unknownT = "q1w2e3r4t5y6u7i8o9p0asdfgh"
)

// harnessOptions change what the API is told about where it lives.
type harnessOptions struct {
	publicURL string
	origins   []string
	// noWebhooks leaves MMCONNECT_WEBHOOK_URL unset.
	noWebhooks bool
	// appName and helpURL are MMCONNECT_APP_NAME and MMCONNECT_HELP_URL.
	appName, helpURL string
	// limits, maxPerEndUser, trustedProxies and extraKeys are the abuse
	// limits and more API keys.
	limits          *api.RateLimits
	allowTokenPaths bool
	proxyMaxBody    int64
	maxPerEndUser   int
	trustedProxies  []netip.Prefix
	extraKeys       []string
	// metrics wires the real Prometheus metrics, served on /metrics.
	metrics bool
	// traced makes each request a span of the OpenTelemetry SDK, kept in
	// harness.spans.
	traced bool
}

const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", origins: []string{"https://app.example.com"}})
}

func newHarnessWith(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, publicURL: opts.publicURL, logs: &logtest.Buffer{}, key: secret.NewAPIKey(), dataDir: t.TempDir(),
		now: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
	h.mm = mattermosttest.NewServer(t)
	h.mm.AddToken(tokenA, mattermosttest.User{ID: userA, Username: "alice", Email: "alice@example.com"})
	h.mm.AddToken(tokenA2, mattermosttest.User{ID: userA, Username: "alice", Email: "alice@example.com"})
	h.mm.AddToken(tokenB, mattermosttest.User{ID: userB, Username: "bob", Email: "bob@example.com"})
	h.secrets = []string{tokenA, tokenA2, tokenB, unknownT, h.key, mattermosttest.WebSessionCSRF, testWebhookSecret}

	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.OpenSQLite(context.Background(), filepath.Join(h.dataDir, "mmconnect.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sealer, err := secret.NewSealer(bytes.Repeat([]byte{7}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := mattermost.LoadRootCAs(h.mm.CAFile(t))
	if err != nil {
		t.Fatal(err)
	}
	verifier := mattermost.New(mattermost.Options{Timeout: 2 * time.Second, RootCAs: pool,
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	svc := connection.NewService(st, verifier, sealer, connection.WithClock(h.clock),
		connection.WithRevoker(verifier, true), connection.WithEvents(!opts.noWebhooks),
		connection.WithMaxPerEndUser(opts.maxPerEndUser))
	h.sessions = session.NewService(st, 30*time.Minute, h.clock)
	if opts.limits != nil {
		opts.limits.Now = h.clock
	}
	deps := api.Deps{Connections: svc, Sessions: h.sessions, APIKeys: secret.NewKeySet(append([]string{h.key}, opts.extraKeys...)),
		RateLimits: opts.limits, TrustedProxies: opts.trustedProxies, Idempotency: idempotency.NewService(st, sealer, h.clock),
		Audit: audit.NewService(st, 0, h.clock),
		Proxy: &api.ProxyOptions{
			Transport: outbound.NewClient(outbound.Options{Timeout: 2 * time.Second, Fenced: true, RootCAs: pool,
				AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}).Transport,
			MaxBody: cmp.Or(opts.proxyMaxBody, 100<<20), AllowTokenPaths: opts.allowTokenPaths, Timeout: 2 * time.Second,
		},
		Logger: log, OpenAPI: mmconnect.OpenAPI(), PublicURL: opts.publicURL, AllowedOrigins: opts.origins,
		AppName: cmp.Or(opts.appName, "this app"), HelpURL: opts.helpURL}
	if opts.metrics {
		deps.Metrics = metrics.New("test")
	}
	if opts.traced {
		h.spans = tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(h.spans))
		t.Cleanup(func() { tp.Shutdown(context.Background()) })
		deps.Tracer, deps.Propagator = tp.Tracer("test"), propagation.TraceContext{}
	}
	if !opts.noWebhooks {
		h.receiver = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}))
		t.Cleanup(h.receiver.Close)
		keys, err := webhook.Secrets(testWebhookSecret)
		if err != nil {
			t.Fatal(err)
		}
		h.hooks, err = webhook.NewService(st, webhook.Options{URL: h.receiver.URL, Secrets: keys, Render: api.WebhookBody,
			Now: h.clock, Client: outbound.NewClient(outbound.Options{Timeout: time.Second})})
		if err != nil {
			t.Fatal(err)
		}
		deps.Webhooks = h.hooks
	}
	h.handler = api.NewServer(deps)

	doc, err := contract()
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	h.router, err = gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.assertNoSecretsLogged)
	return h
}

// clock advances a millisecond per reading, so every write has its own time.
func (h *harness) clock() time.Time {
	h.clockMu.Lock()
	defer h.clockMu.Unlock()
	h.now = h.now.Add(time.Millisecond)
	return h.now
}

// advance moves the clock on, e.g. past a session's expiry.
func (h *harness) advance(d time.Duration) {
	h.clockMu.Lock()
	defer h.clockMu.Unlock()
	h.now = h.now.Add(d)
}

func (h *harness) assertNoSecretsLogged() {
	logs := h.logs.String()
	for _, s := range h.secrets {
		if strings.Contains(logs, s) {
			h.t.Errorf("a secret (…%s) appears in the logs", s[len(s)-4:])
		}
	}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.Body)
	}
	return m
}

// do sends a request with the API key and checks the response against
// openapi.yaml: status declared, headers and body matching their schemas.
func (h *harness) do(method, path string, body any) response {
	h.t.Helper()
	return h.doWith(method, path, body, map[string]string{"Authorization": "Bearer " + h.key})
}

func (h *harness) doWith(method, path string, body any, headers map[string]string) response {
	h.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		raw, _ = json.Marshal(b)
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(raw))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		switch {
		case k == "X-Test-Remote-Addr":
			req.RemoteAddr = v // where the request comes from, not a header
		case v == "":
			req.Header.Del(k)
		default:
			req.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, req)
	res := response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
	h.checkContract(req, raw, res)
	return res
}

func (h *harness) checkContract(req *http.Request, body []byte, res response) {
	h.t.Helper()
	if res.Header.Get("X-Request-Id") == "" {
		h.t.Errorf("%s %s: no X-Request-Id", req.Method, req.URL)
	}
	if req.Method == http.MethodOptions && res.Status == http.StatusNoContent {
		return // a CORS preflight: the CORS protocol, not the API contract
	}
	ctx := context.Background()
	vreq := req.Clone(ctx)
	vreq.Body = io.NopCloser(bytes.NewReader(body))
	if req.Method == http.MethodHead {
		// HEAD is GET without a body: its status and headers follow GET's.
		vreq.Method = http.MethodGet
		if _, _, err := h.router.FindRoute(vreq); err != nil && res.Status != http.StatusNotFound && res.Status != http.StatusMethodNotAllowed {
			h.t.Errorf("HEAD %s: no GET in openapi.yaml but answered %d", req.URL, res.Status)
		}
		return
	}
	if strings.Contains(req.URL.Path, "/proxy/") {
		// The proxy passes Mattermost's answers on as they are (any status,
		// any body); only mmconnect's own answers are its problems.
		if res.Header.Get("Mmconnect-Upstream") != "true" {
			h.checkProblemSchema(res)
		}
		return
	}
	route, params, err := h.router.FindRoute(vreq)
	if err != nil {
		// Not in the contract (unknown path or method): it must be a problem.
		if res.Status != http.StatusNotFound && res.Status != http.StatusMethodNotAllowed {
			h.t.Errorf("%s %s: not in openapi.yaml but answered %d", req.Method, req.URL, res.Status)
		}
		h.checkProblemSchema(res)
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	err = openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 res.Status,
		Header:                 res.Header,
		Body:                   io.NopCloser(bytes.NewReader(res.Body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	})
	if err != nil {
		h.t.Errorf("%s %s → %d breaks openapi.yaml: %v\nbody: %s", req.Method, req.URL, res.Status, err, res.Body)
	}
}

func (h *harness) checkProblemSchema(res response) {
	h.t.Helper()
	doc, _ := contract()
	if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
		h.t.Errorf("problem Content-Type = %q", ct)
	}
	var v any
	if err := json.Unmarshal(res.Body, &v); err != nil {
		h.t.Errorf("problem body not JSON: %s", res.Body)
		return
	}
	if err := doc.Components.Schemas["Problem"].Value.VisitJSON(v); err != nil {
		h.t.Errorf("problem body breaks the Problem schema: %v\n%s", err, res.Body)
	}
}

// expectProblem asserts status and code of a problem response.
func expectProblem(t testing.TB, res response, status int, code string) map[string]any {
	t.Helper()
	if res.Status != status {
		t.Fatalf("status = %d, want %d; body %s", res.Status, status, res.Body)
	}
	p := res.json(t)
	if p["code"] != code {
		t.Fatalf("code = %v, want %s; body %s", p["code"], code, res.Body)
	}
	if res.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", res.Header.Get("Content-Type"))
	}
	if p["request_id"] != res.Header.Get("X-Request-Id") {
		t.Fatalf("request_id %v differs from X-Request-Id %q", p["request_id"], res.Header.Get("X-Request-Id"))
	}
	return p
}

// connect posts a valid connection request and returns the body.
func (h *harness) connect(token string, endUser *string) map[string]any {
	h.t.Helper()
	body := map[string]any{"server_url": h.mm.URL, "token": token}
	if endUser != nil {
		body["end_user_id"] = *endUser
	}
	res := h.do("POST", "/connections", body)
	if res.Status != http.StatusCreated && res.Status != http.StatusOK {
		h.t.Fatalf("connect: %d %s", res.Status, res.Body)
	}
	return res.json(h.t)
}

func strp(s string) *string { return &s }

// dataDirBytes reads every file the store left in the data dir.
func (h *harness) dataDirBytes() []byte {
	h.t.Helper()
	var all []byte
	entries, _ := os.ReadDir(h.dataDir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(h.dataDir, e.Name()))
		if err == nil {
			all = append(all, b...)
		}
	}
	return all
}

func mattermosttestUserA() mattermosttest.User {
	return mattermosttest.User{ID: userA, Username: "alice", Email: "alice@example.com"}
}

func mattermosttestUserC() mattermosttest.User {
	return mattermosttest.User{ID: "c95oboh88frobdioocwwdoqhdc", Username: "carol", Email: "carol@example.com"}
}

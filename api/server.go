// Package api is mmconnect's HTTP transport: it translates requests into
// calls on the connection service and its results and errors into JSON and
// RFC 9457 problems, as openapi.yaml describes. It holds no business rules.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/logging"
	"github.com/mmconnect/mmconnect/internal/secret"
	"github.com/mmconnect/mmconnect/internal/session"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// Connections is what the API needs from the domain.
type Connections interface {
	Connect(ctx context.Context, in connection.ConnectInput) (connection.Connection, bool, error)
	Get(ctx context.Context, id string) (connection.Connection, error)
	List(ctx context.Context, q connection.ListQuery) (connection.Page, error)
	Verify(ctx context.Context, id string) (connection.Connection, error)
	Credentials(ctx context.Context, id string) (connection.Credentials, error)
	Live(ctx context.Context, endUserID string) ([]connection.Connection, error)
	Revoke(ctx context.Context, id string, upstream bool) (connection.Connection, error)
	Ready(ctx context.Context) error
}

// Sessions is what the API needs of connect sessions.
type Sessions interface {
	Open(ctx context.Context, endUserID string) (session.Session, string, error)
	Authenticate(ctx context.Context, token string) (session.Session, error)
	End(ctx context.Context, id string) error
}

// Webhooks is what the API needs of webhook deliveries.
type Webhooks interface {
	List(ctx context.Context, q webhook.Query) (webhook.Page, error)
	Retry(ctx context.Context, id string) (webhook.Delivery, error)
	Ping(ctx context.Context) (webhook.Delivery, error)
}

// Deps are everything the HTTP API is built from.
type Deps struct {
	Connections Connections
	Sessions    Sessions
	// Webhooks, when nil, makes the webhook routes answer 409
	// webhooks_disabled.
	Webhooks Webhooks
	APIKeys  *secret.KeySet
	Logger   *slog.Logger
	// AccessLog, when set, takes the access log's lines (one per request)
	// instead of Logger: a logger whose lines may be held to be written
	// out together (logging.Stream).
	AccessLog *slog.Logger
	// OpenAPI is the contract, served at /openapi.yaml.
	OpenAPI []byte
	// PublicURL is where browsers reach this service (connect_url).
	PublicURL string
	// AllowedOrigins may embed the Connect page, get its messages and call
	// the API from a browser (CORS).
	AllowedOrigins []string
	// AllowHTTP tells the Connect page whether http:// server URLs pass.
	AllowHTTP bool
	// AppName names the app on the Connect page; HelpURL, when set, links
	// to the app's own help.
	AppName string
	HelpURL string
	// Metrics, when set, counts requests and rate-limit refusals, and
	// serves GET /metrics on this listener unless MetricsElsewhere: behind
	// MetricsToken when set, otherwise behind an API key.
	Metrics          Metrics
	MetricsToken     string
	MetricsElsewhere bool
	// Proxy, when set, serves /connections/{id}/proxy/{path}.
	Proxy *ProxyOptions
	// Audit, when set, records who did what (GET /audit-events).
	Audit Audit
	// Idempotency, when set, makes POST /connections and POST
	// /connect/sessions safe to retry with an Idempotency-Key.
	Idempotency Idempotency
	// RateLimits, when set, bound connects and verifies per caller.
	RateLimits *RateLimits
	// TrustedProxies may set X-Forwarded-For; without them the client's
	// address is the connection's.
	TrustedProxies []netip.Prefix
	// Tracer, when set, makes each request a server span, continuing the
	// caller's trace context read through Propagator (W3C traceparent).
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
}

// Metrics is what the API reports to.
type Metrics interface {
	// ObserveRequest counts a request; upstream tells an answer that is
	// Mattermost's own, passed through by the proxy, from one of ours.
	ObserveRequest(route, method string, status int, upstream bool, d time.Duration)
	RateLimited(limit string)
	// ExpectRateLimits names the limits in force before any refusal, so
	// their counts read 0 rather than nothing.
	ExpectRateLimits(limits ...string)
	Handler() http.Handler
}

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// Request headers: MaxHeaderBytes is the limit the API enforces, with a
// problem+json 431; HardMaxHeaderBytes is the http.Server's own, higher
// limit, past which Go answers in plain text before the API sees the
// request.
const (
	MaxHeaderBytes     = 32 << 10
	HardMaxHeaderBytes = 1 << 20
)

// Server is the HTTP API.
type Server struct {
	echo     *echo.Echo
	deps     Deps
	validate *validator.Validate
	pageCSP  string
	pageHTML []byte
	limits   *rateLimiters
}

// NewServer builds the API with every route, middleware and the error table.
func NewServer(deps Deps) *Server {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = ipExtractor(deps.TrustedProxies)
	if deps.AccessLog == nil {
		deps.AccessLog = deps.Logger
	}
	s := &Server{echo: e, deps: deps, validate: newValidator(deps.AllowHTTP),
		pageCSP: pageCSP(deps.AllowedOrigins), pageHTML: connectPageHTML(deps.AllowedOrigins),
		limits: newRateLimiters(deps.RateLimits)}
	if deps.Metrics != nil && s.limits != nil {
		deps.Metrics.ExpectRateLimits(s.limits.names()...)
	}
	e.HTTPErrorHandler = errorHandler(deps.Logger)
	e.Use(s.requestIDMiddleware)
	if deps.Tracer != nil {
		e.Use(s.traced)
	}
	e.Use(s.accessLog, headerLimit, middleware.RecoverWithConfig(middleware.RecoverConfig{
		StackSize:           8 << 10,
		DisableStackAll:     true,
		DisableErrorHandler: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			return fmt.Errorf("panic: %w\n%s", err, stack)
		},
	}))
	if len(deps.AllowedOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			// Only routes that exist get CORS; an unknown path stays a 404.
			Skipper:          func(c echo.Context) bool { return c.Path() == "" || c.Path() == "/*" },
			AllowOrigins:     deps.AllowedOrigins,
			AllowMethods:     []string{http.MethodGet, http.MethodPost, http.MethodDelete},
			AllowHeaders:     []string{echo.HeaderAuthorization, echo.HeaderContentType, "Idempotency-Key"},
			ExposeHeaders:    []string{echo.HeaderXRequestID, echo.HeaderLocation, "Retry-After", "Idempotent-Replayed"},
			AllowCredentials: false,
			MaxAge:           600,
		}))
	}
	s.routes()
	return s
}

// ServeHTTP makes the Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

const ctxRequestID = "request_id"

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// requestIDMiddleware gives every request an id: the load balancer's
// X-Request-Id when it is a sane token, else a fresh random one.
func (s *Server) requestIDMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !requestIDPattern.MatchString(id) {
			id = connection.RandomID("")
		}
		c.Set(ctxRequestID, id)
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		// Every log line written with the request's context carries the id.
		req := c.Request()
		c.SetRequest(req.WithContext(logging.WithRequestID(req.Context(), id)))
		return next(c)
	}
}

// traced makes the request a server span named by its method and route,
// continuing the caller's trace context, with the request id and the
// final status (a 5xx marks the span as an error). It wraps the access
// log, so the status is the one sent and the log line carries the trace.
func (s *Server) traced(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		ctx := s.deps.Propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
		route, method := routeOf(c), methodOf(req)
		attrs := []attribute.KeyValue{semconv.HTTPRequestMethodKey.String(method), semconv.HTTPRoute(route),
			attribute.String("mmconnect.request_id", requestID(c))}
		name := method
		if method == otherMethod {
			// As OpenTelemetry's HTTP conventions name such a request.
			name = "HTTP"
			attrs = append(attrs, semconv.HTTPRequestMethodOriginal(req.Method))
		}
		ctx, span := s.deps.Tracer.Start(ctx, name+" "+route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		defer span.End()
		c.SetRequest(req.WithContext(ctx))
		err := next(c)
		status := c.Response().Status
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		return err
	}
}

// ipExtractor believes X-Forwarded-For only from the trusted proxies (and
// nothing else: not loopback or private ranges by default).
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// headerLimit refuses a request whose headers are over MaxHeaderBytes,
// counted as net/http counts them (request line and each "Name: value").
func headerLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
		for k, vs := range r.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 4
			}
		}
		if n > MaxHeaderBytes {
			return &requestError{http.StatusRequestHeaderFieldsTooLarge, "headers_too_large",
				fmt.Sprintf("The request's headers are larger than %d KiB.", MaxHeaderBytes>>10)}
		}
		return next(c)
	}
}

func requestID(c echo.Context) string {
	id, _ := c.Get(ctxRequestID).(string)
	return id
}

// unmatchedRoute names, in logs, metrics and traces, a request whose path
// no route matched.
const unmatchedRoute = "unknown"

// routeOf is the request's route as logs, metrics and traces name it:
// the matched route's template (/connections/:id), never the path itself,
// which the client chose and which may hold ids (one label per id would
// grow the metrics without bound); unmatchedRoute when none matched.
func routeOf(c echo.Context) string {
	if p := c.Path(); p != "" {
		return p
	}
	return unmatchedRoute
}

// otherMethod names, in metrics and traces, a request whose method is not
// one of HTTP's (OpenTelemetry's word for it).
const otherMethod = "_OTHER"

// methodOf is the request's method as metrics and traces name it: one of
// HTTP's methods, or otherMethod. Go's server takes any token as a
// method, and a series per token would let anyone, without a key, grow
// /metrics by a histogram a request. The access log keeps the method as
// sent.
func methodOf(r *http.Request) string {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return r.Method
	}
	return otherMethod
}

// accessLog writes one line per request: never headers, bodies or query
// values (an end user id is the app's business, a token is nobody's).
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		// One measure for /metrics and the log line, so the two agree.
		took, route := time.Since(start), routeOf(c)
		// Mattermost's own answer, passed through by the proxy: marked in
		// both, so its 5xx are never read as ours.
		upstream := c.Response().Header().Get(headerUpstream) == "true"
		if s.deps.Metrics != nil {
			s.deps.Metrics.ObserveRequest(route, methodOf(c.Request()), c.Response().Status, upstream, took)
		}
		ctx := c.Request().Context()
		log := s.deps.AccessLog
		if !log.Enabled(ctx, slog.LevelInfo) {
			return nil
		}
		// LogAttrs with typed attributes: no boxing of each value.
		log.LogAttrs(ctx, slog.LevelInfo, "request",
			slog.String("request_id", requestID(c)),
			slog.String("method", c.Request().Method),
			slog.String("route", route),
			slog.Int("status", c.Response().Status),
			slog.Int64("bytes", c.Response().Size),
			logging.Millis("duration", took),
			slog.Bool("upstream", upstream),
		)
		return nil
	}
}

func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// writeJSON writes v without escaping <, > and & (the output is JSON, not
// HTML) and with a final newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// respond writes a JSON body with a status.
func respond(c echo.Context, status int, v any) error {
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	c.Response().WriteHeader(status)
	return writeJSON(c.Response(), v)
}

package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/audit"
	"github.com/mmconnect/mmconnect/internal/connection"
)

// ProxyOptions configure /connections/{id}/proxy/{path}.
type ProxyOptions struct {
	// Transport calls Mattermost: built by the outbound package, fenced,
	// with the per-host limit, no redirects followed, and a timeout to
	// the answer's headers.
	Transport http.RoundTripper
	// MaxBody bounds a request body (413 past it).
	MaxBody int64
	// AllowTokenPaths opens the paths that mint or reveal credentials.
	AllowTokenPaths bool
	// Timeout is the transport's wait for an answer's headers; a retry
	// never waits longer than it.
	Timeout time.Duration
}

// ProxyConnections is what the proxy needs of the domain.
type ProxyConnections interface {
	ForProxy(ctx context.Context, id string) (connection.Connection, string, error)
	ObserveTraffic(ctx context.Context, c connection.Connection, started time.Time, rejected bool) error
}

// proxyForwarded are the caller's headers that reach Mattermost; every
// other one (Authorization, Cookie, Host, Forwarded, X-Forwarded-*,
// hop-by-hop) stays here.
var proxyForwarded = []string{"Content-Type", "Accept", "Accept-Encoding", "Accept-Language", "If-Match", "If-None-Match",
	"If-Modified-Since", "X-Requested-With", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions"}

// MaxProxyRetries bounds Mmconnect-Retries; maxRetryBody is the largest
// request body kept in memory so it can be sent again.
const (
	MaxProxyRetries = 5
	maxRetryBody    = 1 << 20
)

// headerUpstream marks an answer as Mattermost's own, passed through; the
// proxy's own answers (problem+json) never carry it, and /metrics counts
// requests by it.
const headerUpstream = "Mmconnect-Upstream"

type proxyCtxKey struct{}

// proxyCall is what one proxied request carries to the transport.
type proxyCall struct {
	retries int
	timeout time.Duration
}

// proxyPath checks and cleans the {path} of a proxied request, from the
// raw (still escaped) request path: decoded once; no dot segments, no
// empty ones, no encoded '/', '\' or '.'; under api/v4/; not a
// credentials path unless allowed. Errors: an invalid_request, or a
// forbiddenError for a credentials path.
func proxyPath(raw string, allowTokenPaths bool) (string, error) {
	lower := strings.ToLower(raw)
	for _, enc := range []string{"%2f", "%5c", "%2e"} {
		if strings.Contains(lower, enc) {
			return "", invalidRequest("The proxied path must not hold an encoded '/', '\\' or '.'.")
		}
	}
	p, err := url.PathUnescape(raw)
	if err != nil {
		return "", invalidRequest("The proxied path has a broken %-escape.")
	}
	if strings.ContainsAny(p, "\\\x00") {
		return "", invalidRequest("The proxied path must not hold '\\'.")
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if s == "." || s == ".." {
			return "", invalidRequest("The proxied path must not hold '.' or '..' segments.")
		}
		// An empty segment ("//") but a trailing one: a proxy in front of
		// Mattermost may merge slashes (nginx does, for a proxy_pass with
		// a URI), and users/me//tokens would reach it as users/me/tokens,
		// past the check below.
		if s == "" && i > 0 && i < len(segs)-1 {
			return "", invalidRequest("The proxied path must not hold empty segments ('//').")
		}
	}
	if len(segs) < 3 || segs[0] != "api" || segs[1] != "v4" || segs[2] == "" {
		return "", invalidRequest("Only Mattermost's API can be proxied: the path must start with api/v4/.")
	}
	if !allowTokenPaths && len(segs) > 3 && segs[2] == "users" {
		rest := segs[3:]
		deny := strings.HasPrefix(rest[0], "login") || strings.HasPrefix(rest[0], "tokens") || strings.HasPrefix(rest[0], "sessions")
		if len(rest) > 1 {
			deny = deny || strings.HasPrefix(rest[1], "tokens") || strings.HasPrefix(rest[1], "sessions")
		}
		if deny {
			return "", &forbiddenError{why: "Paths that create, list or reveal tokens and sessions (api/v4/users/*/tokens, api/v4/users/login, api/v4/users/*/sessions) are not proxied: " +
				"a token minted through the proxy would outlive a revoke. The operator can open them with MMCONNECT_PROXY_ALLOW_TOKEN_PATHS=true."}
		}
	}
	return p, nil
}

// proxy forwards a request to the connection's Mattermost server with its
// token, streaming both ways, and tells the connection what the answer
// showed about the token.
func (s *Server) proxy(c echo.Context) error {
	opts := s.deps.Proxy
	pc, ok := s.deps.Connections.(ProxyConnections)
	if opts == nil || !ok {
		return echo.ErrNotFound
	}
	req := c.Request()
	id := c.Param("id")
	prefix := "/connections/" + url.PathEscape(id) + "/proxy/"
	rawPath, found := strings.CutPrefix(req.URL.EscapedPath(), prefix)
	if !found {
		return invalidRequest("The proxied path cannot be read.")
	}
	path, err := proxyPath(rawPath, opts.AllowTokenPaths)
	if err != nil {
		return err
	}
	call := proxyCall{timeout: opts.Timeout}
	if v := req.Header.Get("Mmconnect-Retries"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > MaxProxyRetries {
			return invalidRequest(fmt.Sprintf("Mmconnect-Retries must be a whole number from 0 to %d.", MaxProxyRetries))
		}
		call.retries = n
	}
	if req.ContentLength > opts.MaxBody {
		return proxyTooLarge(opts.MaxBody)
	}
	conn, token, err := pc.ForProxy(req.Context(), id)
	if err != nil {
		return err
	}
	target, err := url.Parse(conn.ServerURL)
	if err != nil {
		return err
	}
	// A slow 100 MiB transfer or a long-lived websocket must not be cut by
	// the API's own deadlines; the upstream timeout bounds the wait for
	// the answer's headers.
	rc := http.NewResponseController(c.Response().Writer)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})

	started := time.Now()
	var upstreamStatus int
	var proxyErr error
	rp := &httputil.ReverseProxy{
		Transport:     &retryTransport{next: opts.Transport},
		FlushInterval: -1,
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL = &url.URL{Scheme: target.Scheme, Host: target.Host, Path: strings.TrimSuffix(target.Path, "/") + "/" + path,
				RawQuery: req.URL.RawQuery}
			out.Host = target.Host
			h := http.Header{}
			for _, name := range proxyForwarded {
				if v := pr.In.Header.Values(name); len(v) > 0 {
					h[http.CanonicalHeaderKey(name)] = v
				}
			}
			if up := pr.Out.Header.Get("Upgrade"); up != "" {
				// Set by the reverse proxy itself for an upgrade (a websocket).
				h.Set("Connection", "Upgrade")
				h.Set("Upgrade", up)
			}
			h.Set("Authorization", "Bearer "+token)
			h.Set("X-Request-Id", requestID(c))
			h.Set("User-Agent", "mmconnect")
			out.Header = h
			if pr.In.Body != nil && pr.In.Body != http.NoBody && pr.In.ContentLength != 0 {
				out.Body = http.MaxBytesReader(c.Response().Writer, pr.In.Body, opts.MaxBody)
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			upstreamStatus = resp.StatusCode
			resp.Header.Del("Set-Cookie")
			resp.Header.Set("Mmconnect-Connection-Id", conn.ID)
			resp.Header.Set(headerUpstream, "true")
			if conn.Status == connection.StatusInvalid {
				resp.Header.Set("Mmconnect-Connection-Status", "invalid")
			}
			rejected := resp.StatusCode == http.StatusUnauthorized && tokenRejectedAnswer(resp)
			accepted := resp.StatusCode >= 200 && resp.StatusCode < 300
			if rejected || accepted {
				if err := pc.ObserveTraffic(context.WithoutCancel(req.Context()), conn, started, rejected); err != nil {
					s.deps.Logger.Warn("record what a proxied answer showed", "request_id", requestID(c), "err", err)
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			proxyErr = err
		},
		ErrorLog: nil,
	}
	rp.ServeHTTP(c.Response(), req.WithContext(context.WithValue(req.Context(), proxyCtxKey{}, call)))
	if proxyErr != nil && !c.Response().Committed {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(proxyErr, &mbe):
			return proxyTooLarge(opts.MaxBody)
		case req.Context().Err() != nil:
			return nil // the caller went away
		}
		return proxyUpstreamError(conn.ServerURL, proxyErr)
	}
	s.audit(c, audit.ConnectionProxy, conn.ID, fmt.Sprintf("%s %s %d", req.Method, path, upstreamStatus))
	return nil
}

// tokenRejectedAnswer tells Mattermost's answer to a dead token (the same
// 401 for a wrong, revoked or disabled token, a deactivated user or tokens
// switched off) from other 401s, such as a failed login. The body it
// reads is put back for the caller.
func tokenRejectedAnswer(resp *http.Response) bool {
	head, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if err != nil {
		return false
	}
	var e struct {
		ID         string `json:"id"`
		StatusCode int    `json:"status_code"`
	}
	return json.Unmarshal(head, &e) == nil && e.ID == "api.context.session_expired.app_error" && e.StatusCode == http.StatusUnauthorized
}

func proxyTooLarge(max int64) error {
	return &requestError{http.StatusRequestEntityTooLarge, "payload_too_large",
		fmt.Sprintf("The request body is larger than the proxy allows (%d MiB, MMCONNECT_PROXY_MAX_BODY).", max>>20)}
}

// proxyUpstreamError names a proxied request that got no answer.
func proxyUpstreamError(server string, err error) error {
	code, msg := connection.CodeUpstreamUnreachable, "%s could not be reached for the proxied request."
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout awaiting response headers") {
		code, msg = connection.CodeUpstreamTimeout, "%s did not answer the proxied request in time (MMCONNECT_PROXY_TIMEOUT)."
	}
	return &connection.UpstreamError{Code: code, Message: fmt.Sprintf(msg, server), Err: err}
}

// retryTransport sends an idempotent request again, when asked to
// (Mmconnect-Retries), on 429 (after Retry-After), 502, 503 and 504, with
// exponential backoff and jitter, if its body is small enough to keep.
type retryTransport struct {
	next http.RoundTripper
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	call, _ := req.Context().Value(proxyCtxKey{}).(proxyCall)
	if call.retries == 0 || !idempotentMethod(req.Method) {
		return t.next.RoundTrip(req)
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(req.Body, maxRetryBody+1))
		if err != nil {
			return nil, err
		}
		if len(b) > maxRetryBody {
			// Too large to keep: sent once, as it streams.
			req.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(b), req.Body), req.Body}
			return t.next.RoundTrip(req)
		}
		body = b
	}
	for attempt := 0; ; attempt++ {
		r := req.Clone(req.Context())
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		resp, err := t.next.RoundTrip(r)
		if err != nil || attempt == call.retries || !retryable(resp.StatusCode) {
			return resp, err
		}
		wait := time.Duration(100<<attempt) * time.Millisecond
		wait += rand.N(wait/2 + 1)
		if resp.StatusCode == http.StatusTooManyRequests {
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
				wait = time.Duration(s) * time.Second
			}
		}
		if call.timeout > 0 && wait > call.timeout {
			return resp, nil // waiting would outlast the proxy's timeout
		}
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(wait):
		}
	}
}

func idempotentMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

func retryable(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Package outbound is the one place mmconnect builds HTTP clients for the
// outside world: Mattermost servers named by strangers (fenced away from
// private and reserved networks), and the operator's webhook receiver (not
// fenced, but with the same timeouts, no redirects and no proxy). Every
// client shares one per-host limit on requests in flight, so mmconnect can
// never be made to flood one server.
package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Options configure one client.
type Options struct {
	// Timeout bounds connecting, the TLS handshake and waiting for the
	// answer's headers; callers bound a whole exchange with their context.
	Timeout time.Duration
	// Fenced refuses private and reserved networks (see the guard) unless
	// they are in AllowedNetworks. Clients that call addresses typed by
	// end users must be fenced.
	Fenced          bool
	AllowedNetworks []netip.Prefix
	// RootCAs are trusted instead of the system roots when set.
	RootCAs *x509.CertPool
	// Resolver and Dial replace DNS and the network (tests). With Fenced,
	// Dial receives only numeric addresses the guard has permitted.
	Resolver Resolver
	Dial     DialFunc
	// HostLimit bounds requests in flight per host, shared by every client
	// built with the same limit. Nil means no limit.
	HostLimit *HostLimit
	// MaxIdleConnsPerHost keeps upstream connections for reuse (default 8).
	MaxIdleConnsPerHost int
	// Trace, when its Provider is set, makes each request a client span
	// and sends the W3C trace context with it.
	Trace Trace
}

// Trace is OpenTelemetry for a client: off when Provider is nil.
type Trace struct {
	Provider   trace.TracerProvider
	Propagator propagation.TextMapPropagator
}

// NewClient builds an HTTP client that never follows a redirect (the
// caller sees the 3xx and decides), ignores proxy settings in the
// environment (the request must reach the host it names and no other) and
// waits for a free slot of its host's limit before each request, within
// the request's own context.
func NewClient(opts Options) *http.Client {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.MaxIdleConnsPerHost <= 0 {
		opts.MaxIdleConnsPerHost = 8
	}
	dial := opts.Dial
	if opts.Fenced {
		dial = newGuard(opts.AllowedNetworks, opts.Resolver, opts.Dial, opts.Timeout).DialContext
	} else if dial == nil {
		dial = (&net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}).DialContext
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dial,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    opts.MaxIdleConnsPerHost,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    opts.Timeout,
		ResponseHeaderTimeout:  opts.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		TLSClientConfig: &tls.Config{
			RootCAs:    opts.RootCAs,
			MinVersion: tls.VersionTLS12,
		},
	}
	var rt http.RoundTripper = tr
	if opts.Trace.Provider != nil {
		// Inside the host limit: the span is the exchange, not the wait.
		rt = otelhttp.NewTransport(rt, otelhttp.WithTracerProvider(opts.Trace.Provider),
			otelhttp.WithPropagators(opts.Trace.Propagator), otelhttp.WithMeterProvider(noop.NewMeterProvider()))
	}
	if opts.HostLimit != nil {
		rt = &limitedTransport{next: rt, limit: opts.HostLimit}
	}
	return &http.Client{
		Transport: rt,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// LoadRootCAs returns the system roots plus the PEM certificates in file.
func LoadRootCAs(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// HostLimit bounds the requests in flight to one host (host:port, case
// folded) across every client that shares it. A request over the limit
// waits for a slot until its context ends. It is safe for concurrent use.
type HostLimit struct {
	perHost int
	mu      sync.Mutex
	hosts   map[string]*hostSlots
}

type hostSlots struct {
	free  chan struct{}
	users int // holders and waiters; the entry goes when it reaches zero
}

// NewHostLimit allows perHost requests in flight to each host.
func NewHostLimit(perHost int) *HostLimit {
	if perHost < 1 {
		perHost = 1
	}
	return &HostLimit{perHost: perHost, hosts: map[string]*hostSlots{}}
}

// Acquire waits for a slot for host. The release function must be called
// exactly once. Errors: the context's, when it ends first.
func (l *HostLimit) Acquire(ctx context.Context, host string) (release func(), err error) {
	host = strings.ToLower(host)
	l.mu.Lock()
	s := l.hosts[host]
	if s == nil {
		s = &hostSlots{free: make(chan struct{}, l.perHost)}
		l.hosts[host] = s
	}
	s.users++
	l.mu.Unlock()
	select {
	case s.free <- struct{}{}:
	case <-ctx.Done():
		l.leave(host, s)
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-s.free
			l.leave(host, s)
		})
	}, nil
}

// InFlight counts the requests holding a slot for host (tests, metrics).
func (l *HostLimit) InFlight(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.hosts[strings.ToLower(host)]; s != nil {
		return len(s.free)
	}
	return 0
}

func (l *HostLimit) leave(host string, s *hostSlots) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.users--
	if s.users == 0 {
		delete(l.hosts, host)
	}
}

// limitedTransport holds a host slot from sending a request until its
// answer's body is closed (or the request fails).
type limitedTransport struct {
	next  http.RoundTripper
	limit *HostLimit
}

func (t *limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	release, err := t.limit.Acquire(req.Context(), req.URL.Host)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("waiting for a free slot to %s: %w", req.URL.Host, err)
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		release()
		return nil, err
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection (a websocket) holds its slot until closed,
		// and stays writable for the reverse proxy.
		resp.Body = &releasingConn{ReadWriteCloser: rwc, release: release}
		return resp, nil
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

type releasingConn struct {
	io.ReadWriteCloser
	release func()
}

func (c *releasingConn) Close() error {
	err := c.ReadWriteCloser.Close()
	c.release()
	return err
}

type releasingBody struct {
	io.ReadCloser
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

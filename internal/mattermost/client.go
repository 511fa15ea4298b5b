// Package mattermost proves personal access tokens against Mattermost
// servers and names every way that can fail, in words for the person who
// typed the server URL and token. It implements connection.Verifier.
package mattermost

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/outbound"
)

// MaxBody is the most of an answer that is ever read: a real /users/me is
// under 2 KiB, so anything near this is not Mattermost.
const MaxBody = 1 << 20

// Options configure a Client.
type Options struct {
	// Timeout bounds one whole check: connecting, TLS, headers and body.
	Timeout time.Duration
	// RootCAs are trusted beside the system roots (self-hosted servers with
	// a private CA). Nil trusts the system roots only.
	RootCAs *x509.CertPool
	// AllowedNetworks are ranges that may be called although they are
	// special-purpose (a self-hosted server on a private network).
	AllowedNetworks []netip.Prefix
	// Resolver and Dial replace DNS and the network (tests). Dial receives
	// only numeric addresses the guard has permitted.
	Resolver outbound.Resolver
	Dial     outbound.DialFunc
	// HostLimit is the per-host limit shared with every other caller of
	// the outside world; nil means none.
	HostLimit *outbound.HostLimit
	// AllowHTTP says whether http:// server URLs are accepted, so that a
	// server answering in plain HTTP is told the right way out.
	AllowHTTP bool
	// IdleConnsPerHost keeps that many connections to one server for
	// reuse; set it to the per-host limit, so every request in flight can
	// keep its connection (default 8).
	IdleConnsPerHost int
	// Trace traces each request to Mattermost and sends it the W3C trace
	// context (off when its Provider is nil).
	Trace outbound.Trace
}

// MaxRedirects is how many same-origin redirects a check follows.
const MaxRedirects = 3

// Client checks and revokes tokens. It is safe for concurrent use and keeps
// upstream connections alive between checks.
type Client struct {
	http      *http.Client
	timeout   time.Duration
	allowHTTP bool
	// fence refuses IP literals and loopback names before any network
	// call (the dialer refuses them again).
	fence outbound.Fence
}

var (
	_ connection.Verifier = (*Client)(nil)
	_ connection.Revoker  = (*Client)(nil)
)

// New builds a Client on a fenced outbound client.
func New(opts Options) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	return &Client{
		timeout:   opts.Timeout,
		allowHTTP: opts.AllowHTTP,
		fence:     outbound.NewFence(opts.AllowedNetworks),
		http: outbound.NewClient(outbound.Options{
			Timeout: opts.Timeout, Fenced: true, AllowedNetworks: opts.AllowedNetworks,
			RootCAs: opts.RootCAs, Resolver: opts.Resolver, Dial: opts.Dial, HostLimit: opts.HostLimit,
			MaxIdleConnsPerHost: opts.IdleConnsPerHost, Trace: opts.Trace,
		}),
	}
}

// LoadRootCAs returns the system roots plus the PEM certificates in file.
func LoadRootCAs(file string) (*x509.CertPool, error) { return outbound.LoadRootCAs(file) }

// Verify asks serverURL who the token belongs to (GET /api/v4/users/me),
// following up to MaxRedirects redirects on the same origin: a server under
// a subpath redirects the root API there, and the Identity's ServerURL is
// where the API really answered. Every failure is a
// *connection.UpstreamError naming the server; the token is sent only in
// the Authorization header, only to that origin, and is in no error.
func (c *Client) Verify(ctx context.Context, serverURL, token string) (connection.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start, err := url.Parse(serverURL)
	if err != nil {
		return connection.Identity{}, fmt.Errorf("server URL: %w", err)
	}
	if err := c.fence.CheckHost(start.Hostname()); err != nil {
		return connection.Identity{}, c.classifyError(ctx, serverURL, err)
	}
	if strings.Trim(start.Path, "/") != "" {
		// A pasted address bar (a team, a channel, the login page) has a
		// path that is not the site root; find the root before the token
		// goes anywhere.
		if start, err = c.findRoot(ctx, serverURL, start); err != nil {
			return connection.Identity{}, err
		}
	}
	target := &url.URL{Scheme: start.Scheme, Host: start.Host, Path: strings.TrimSuffix(start.Path, "/") + "/api/v4/users/me"}
	for hop := 0; ; hop++ {
		resp, err := c.get(ctx, target, token)
		if err != nil {
			return connection.Identity{}, c.classifyError(ctx, serverURL, err)
		}
		if isRedirect(resp.StatusCode) {
			loc := resp.Header.Get("Location")
			discard(resp)
			next, err := target.Parse(loc)
			switch {
			case loc == "" || err != nil:
				return connection.Identity{}, redirectRefused(serverURL, "an unreadable address")
			case origin(next) != origin(start):
				return connection.Identity{}, redirectRefused(serverURL, describeURL(next))
			case hop == MaxRedirects:
				return connection.Identity{}, &connection.UpstreamError{Code: connection.CodeRedirectNotAllowed,
					Message: fmt.Sprintf("%s redirected the check more than %d times (last to %s). Enter the address of the Mattermost server itself.", serverURL, MaxRedirects, describeURL(next))}
			}
			target = next
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
		if err != nil {
			resp.Body.Close()
			return connection.Identity{}, c.classifyError(ctx, serverURL, err)
		}
		discard(resp)
		ident, err := Classify(serverURL, resp.StatusCode, resp.Header, body)
		if err != nil {
			return connection.Identity{}, err
		}
		base, ok := strings.CutSuffix(target.Path, "/api/v4/users/me")
		if !ok {
			return connection.Identity{}, &connection.UpstreamError{Code: connection.CodeNotMattermost,
				Message: fmt.Sprintf("%s answered from %s, which is not where Mattermost's API lives. Check the server URL.", serverURL, describeURL(target))}
		}
		answered := url.URL{Scheme: start.Scheme, Host: start.Host, Path: base}
		ident.ServerURL = strings.TrimSuffix(answered.String(), "/")
		if at, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			ident.AnsweredAt = at.UTC()
		}
		return ident, nil
	}
}

// MaxRootProbes is how many addresses findRoot asks at most: the one given
// and up to four above it.
const MaxRootProbes = 5

// findRoot returns the site root at or above start's path: the first of
// start's path and its parents (same origin, at most MaxRootProbes) whose
// GET <root>/api/v4/system/ping answers as Mattermost's API, which needs no
// token. Every path that is not the API gets Mattermost's web app page, so
// only the API's own answer counts. Errors: *connection.UpstreamError
// (not_mattermost when no candidate answered as the API).
func (c *Client) findRoot(ctx context.Context, serverURL string, start *url.URL) (*url.URL, error) {
	p := strings.TrimSuffix(start.Path, "/")
	for range MaxRootProbes {
		probe := &url.URL{Scheme: start.Scheme, Host: start.Host, Path: p + "/api/v4/system/ping"}
		resp, err := c.get(ctx, probe, "")
		if err != nil {
			return nil, c.classifyError(ctx, serverURL, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		discard(resp)
		if err != nil {
			return nil, c.classifyError(ctx, serverURL, err)
		}
		if isPing(resp, body) {
			return &url.URL{Scheme: start.Scheme, Host: start.Host, Path: p}, nil
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			_, err := Classify(serverURL, resp.StatusCode, resp.Header, body)
			return nil, err
		}
		if isRedirect(resp.StatusCode) {
			// A subpath install sends its root API to the subpath.
			if next, err := probe.Parse(resp.Header.Get("Location")); err == nil && origin(next) == origin(start) {
				if base, ok := strings.CutSuffix(next.Path, "/api/v4/system/ping"); ok && base != p {
					p = base
					continue
				}
			}
		}
		if p == "" {
			break
		}
		p = p[:strings.LastIndexByte(p, '/')]
	}
	return nil, &connection.UpstreamError{Code: connection.CodeNotMattermost,
		Message: fmt.Sprintf("No Mattermost server answered at %s or at any address above it. Check the server URL: it is the address in your browser when you use Mattermost.", serverURL)}
}

// isPing tells the API's answer to GET /api/v4/system/ping (JSON with a
// status, and Mattermost's version header) from the web app's HTML page.
func isPing(resp *http.Response, body []byte) bool {
	if ServerVersion(resp.Header.Get("X-Version-Id")) == "" {
		return false
	}
	var ping struct {
		Status string `json:"status"`
	}
	return decodeAnswer(body, &ping) == nil && ping.Status != ""
}

func (c *Client) get(ctx context.Context, target *url.URL, token string) (*http.Response, error) {
	return c.do(ctx, http.MethodGet, target, token, nil)
}

// do sends one request with the token in the Authorization header.
// Errors: the transport's, or the context's when it ended before the
// answer was taken: net/http may still hand over an answer that raced the
// cancellation (a server replying because we hung up, an empty 200), and
// that is not the server answering in time.
func (c *Client) do(ctx context.Context, method string, target *url.URL, token string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "mmconnect")
	resp, err := c.http.Do(req)
	if err == nil && ctx.Err() != nil {
		resp.Body.Close()
		return nil, context.Cause(ctx)
	}
	return resp, err
}

// discard reads a little of what is left, so the connection can be reused,
// and closes the body; a large rest is dropped with the connection.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// origin is scheme://host:port with the default port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[strings.ToLower(u.Scheme)]
	}
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(strings.ToLower(strings.TrimSuffix(u.Hostname(), ".")), port)
}

// describeURL shows where a redirect pointed without query or userinfo.
func describeURL(u *url.URL) string {
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return v.String()
}

func redirectRefused(server, where string) error {
	return &connection.UpstreamError{Code: connection.CodeRedirectNotAllowed,
		Message: fmt.Sprintf("%s redirected the check to %s, another server. Enter the address of the Mattermost server itself (the address in your browser when you use Mattermost).", server, where)}
}

// classifyError names a failure to get a complete answer.
func (c *Client) classifyError(ctx context.Context, server string, err error) error {
	up := func(code, format string) error {
		return &connection.UpstreamError{Code: code, Message: fmt.Sprintf(format, server), Err: stripURL(err)}
	}
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var unknownAuth x509.UnknownAuthorityError
	var invalidCert x509.CertificateInvalidError
	var recordErr tls.RecordHeaderError
	var tlsAlert tls.AlertError
	switch {
	case outbound.IsRefused(err):
		return up(connection.CodeHostNotAllowed, "%s is on a private or reserved network that this service may not call. If your Mattermost server really is on a private network, ask the operator of this service to allow it (MMCONNECT_ALLOWED_NETWORKS).")
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return up(connection.CodeUpstreamTimeout, "%s did not answer in time. Check that the server URL is right and the server is running, then try again.")
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return up(connection.CodeHostNotFound, "No server named in %s exists (the name is not in DNS). Check the server URL for typos: it is the address in your browser when you use Mattermost.")
	case errors.As(err, &dnsErr):
		return up(connection.CodeUpstreamUnreachable, "The name of %s could not be looked up right now. Try again in a moment.")
	case errors.As(err, &hostErr):
		return up(connection.CodeUpstreamTLS, "The TLS certificate of %s is not valid for that name. Check the server URL, or ask the server's administrator to fix its certificate.")
	case errors.As(err, &unknownAuth):
		return up(connection.CodeUpstreamTLS, "The TLS certificate of %s is signed by an authority this service does not trust. Ask the server's administrator to use a trusted certificate.")
	case errors.As(err, &invalidCert):
		return up(connection.CodeUpstreamTLS, "The TLS certificate of %s is expired or otherwise invalid. Ask the server's administrator to renew it.")
	case errors.As(err, &certErr):
		return up(connection.CodeUpstreamTLS, "The TLS certificate of %s could not be verified. Ask the server's administrator to check it.")
	case errors.As(err, &recordErr), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// Never fall back to http:// on our own: an attacker on the path
		// could force that and read the token.
		if c.allowHTTP {
			return up(connection.CodeUpstreamTLS, "%s answered in plain HTTP, not HTTPS. If this Mattermost server really has no HTTPS, type its address starting with http:// to connect over plain HTTP (the token then crosses the network unencrypted).")
		}
		return up(connection.CodeUpstreamTLS, "%s answered in plain HTTP, not HTTPS. This service connects to Mattermost over HTTPS only: check the address and port, or ask your Mattermost administrator to enable HTTPS.")
	case errors.As(err, &tlsAlert):
		return up(connection.CodeUpstreamTLS, "The secure (TLS) connection to %s failed. Check the server URL and its port.")
	}
	return up(connection.CodeUpstreamUnreachable, "%s could not be reached (the connection was refused or cut). Check the server URL and that the server is running.")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// stripURL drops the request URL from a *url.Error; the cause is what
// matters in a log, and the URL is already named in the message.
func stripURL(err error) error {
	if inner := errors.Unwrap(err); inner != nil {
		return inner
	}
	return err
}

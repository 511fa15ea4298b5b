package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// refusedPrefixes are the IANA special-purpose ranges (and the rest of the
// address space that is not global unicast): a server URL typed by a
// stranger must never make mmconnect call into its own network, the
// cloud's metadata service, or anything else that is not the public
// Internet, unless the operator lists the range in MMCONNECT_ALLOWED_NETWORKS.
var refusedPrefixes = mustPrefixes(
	// IPv4
	"0.0.0.0/8",       // "this network"
	"10.0.0.0/8",      // private
	"100.64.0.0/10",   // carrier-grade NAT
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local, cloud metadata 169.254.169.254
	"172.16.0.0/12",   // private
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // TEST-NET-1
	"192.88.99.0/24",  // 6to4 relay anycast
	"192.168.0.0/16",  // private
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // TEST-NET-2
	"203.0.113.0/24",  // TEST-NET-3
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, and 255.255.255.255 broadcast
	// IPv6
	"::/128",         // unspecified
	"::1/128",        // loopback
	"::/96",          // IPv4-compatible (deprecated)
	"::ffff:0:0/96",  // IPv4-mapped
	"64:ff9b::/96",   // NAT64
	"64:ff9b:1::/48", // local-use NAT64
	"100::/64",       // discard-only
	"2001::/23",      // IETF protocol assignments (Teredo, benchmarking, ORCHID)
	"2001:db8::/32",  // documentation
	"2002::/16",      // 6to4
	"3fff::/20",      // documentation
	"5f00::/16",      // SRv6 SIDs
	"fc00::/7",       // unique local
	"fe80::/10",      // link-local
	"fec0::/10",      // site-local (deprecated)
	"ff00::/8",       // multicast
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Resolver looks up a host's addresses; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DialFunc opens a connection to a numeric address ("ip:port").
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// RefusedError says a host or address may not be called.
type RefusedError struct {
	Host string
	Addr netip.Addr // zero when the host name itself is refused
}

func (e *RefusedError) Error() string {
	if e.Addr.IsValid() {
		return fmt.Sprintf("%s resolves to %s, a refused network", e.Host, e.Addr)
	}
	return e.Host + " is a refused host name"
}

// guard decides where the client may connect and does the connecting: it
// resolves a name once, keeps only permitted addresses and dials those
// exact addresses, so a name cannot pass the check with one answer and be
// dialled with another. The real dialer's Control hook checks the socket's
// address once more.
type guard struct {
	allowed  []netip.Prefix
	resolver Resolver
	dial     DialFunc
}

func newGuard(allowed []netip.Prefix, resolver Resolver, dial DialFunc, timeout time.Duration) *guard {
	g := &guard{allowed: allowed, resolver: resolver, dial: dial}
	if g.resolver == nil {
		g.resolver = &net.Resolver{}
	}
	if g.dial == nil {
		d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.control}
		g.dial = d.DialContext
	}
	return g
}

// Permits reports whether addr may be called: outside every refused range,
// or inside a range the operator allowed.
func (g *guard) permits(addr netip.Addr) bool {
	if !addr.IsValid() || addr.Zone() != "" {
		return false
	}
	for _, p := range g.allowed {
		if p.Contains(addr) {
			return true
		}
	}
	for _, p := range refusedPrefixes {
		if p.Contains(addr) {
			return false
		}
	}
	return addr.IsGlobalUnicast()
}

// Fence is the address rule alone, for refusing a host before any network
// call; the dialer of a fenced client applies the same rule again.
type Fence struct{ g *guard }

// NewFence builds the rule with the operator's allowed ranges.
func NewFence(allowed []netip.Prefix) Fence { return Fence{g: &guard{allowed: allowed}} }

// CheckHost returns a *RefusedError for an IP literal in a refused range or
// a name that is loopback by definition (RFC 6761).
func (f Fence) CheckHost(host string) error { return f.g.checkHost(host) }

// checkHost refuses, before any network call, a host that is an IP literal
// in a refused range or a name that is loopback by definition (RFC 6761).
func (g *guard) checkHost(host string) error {
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if addr, err := netip.ParseAddr(host); err == nil {
		if !g.permits(addr) {
			return &RefusedError{Host: host, Addr: addr}
		}
		return nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		if !g.permits(netip.MustParseAddr("127.0.0.1")) {
			return &RefusedError{Host: host}
		}
	}
	return nil
}

// DialContext is the transport's dialer.
func (g *guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if err := g.checkHost(host); err != nil {
		return nil, err
	}
	var candidates []netip.Addr
	if addr, err := netip.ParseAddr(host); err == nil {
		candidates = []netip.Addr{addr}
	} else {
		addrs, err := g.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			// Resolvers hand IPv4 answers back as IPv4-mapped IPv6.
			candidates = append(candidates, a.Unmap())
		}
	}
	var permitted []netip.Addr
	for _, a := range candidates {
		if g.permits(a) {
			permitted = append(permitted, a)
		}
	}
	if len(permitted) == 0 {
		if len(candidates) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
		return nil, &RefusedError{Host: host, Addr: candidates[0]}
	}
	var firstErr error
	for _, a := range permitted {
		conn, err := g.dial(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// control runs on the socket just before connect(2) with the address
// actually dialled: the last word, whatever resolved it.
func (g *guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: unparsable address: %w", address, err)
	}
	if !g.permits(ap.Addr().Unmap()) {
		return &RefusedError{Host: address, Addr: ap.Addr()}
	}
	return nil
}

// IsRefused reports whether err comes from the fence: a host or address
// that may not be called.
func IsRefused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}

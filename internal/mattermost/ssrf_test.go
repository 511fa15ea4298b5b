package mattermost_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/mattermost"
)

// checkServerURL runs what POST /connections runs: the shape check, then the
// upstream check. It returns the problem code ("" if accepted).
func checkServerURL(t *testing.T, c *mattermost.Client, raw string) string {
	t.Helper()
	serverURL, fe := connection.ParseServerURL(raw, false)
	if fe != nil {
		return "validation_failed"
	}
	_, err := c.Verify(context.Background(), serverURL, validToken)
	if err == nil {
		return ""
	}
	return upstreamCode(t, err)
}

// No hostile server URL is ever dialled: every IANA special-purpose range,
// in every spelling, and names that resolve into them.
func TestHostileServerURLsAreNeverDialled(t *testing.T) {
	const (
		refused = connection.CodeHostNotAllowed
		invalid = "validation_failed"
	)
	fn := newFakeNet(t)
	fn.resolve("evil.example", "127.0.0.1")
	fn.resolve("metadata.example", "169.254.169.254")
	fn.resolve("intranet.example", "10.1.2.3")
	fn.resolve("cgnat.example", "100.64.1.1")
	fn.resolve("v6loop.example", "::1")
	fn.resolve("ula.example", "fd00::1234")
	fn.resolve("mapped.example", "::ffff:192.168.0.1")
	fn.resolve("nat64.example", "64:ff9b::a9fe:a9fe")
	fn.resolve("allprivate.example", "10.0.0.1", "192.168.1.1", "fe80::1")
	fn.resolve("zero.example", "0.0.0.0")
	c := mattermost.New(mattermost.Options{Timeout: time.Second, Resolver: fn, Dial: fn.Dial})

	tests := []struct {
		url  string
		want string
	}{
		// IPv4, dotted decimal: every refused range.
		{"0.0.0.0", refused},
		{"0.1.2.3", refused},
		{"10.0.0.1", refused},
		{"https://10.255.255.255:8065", refused},
		{"100.64.0.1", refused},
		{"100.127.255.254", refused},
		{"127.0.0.1", refused},
		{"https://127.0.0.1:8065/mattermost", refused},
		{"127.255.255.254", refused},
		{"169.254.169.254", refused},
		{"https://169.254.169.254/latest/meta-data", refused},
		{"172.16.0.1", refused},
		{"172.31.255.255", refused},
		{"192.0.0.8", refused},
		{"192.0.2.1", refused},
		{"192.88.99.1", refused},
		{"192.168.1.1", refused},
		{"198.18.0.1", refused},
		{"198.19.255.255", refused},
		{"198.51.100.7", refused},
		{"203.0.113.9", refused},
		{"224.0.0.1", refused},
		{"239.255.255.250", refused},
		{"240.0.0.1", refused},
		{"255.255.255.255", refused},
		// IPv4 in octal, hex, integer and short forms: refused by shape.
		{"0177.0.0.1", invalid},
		{"0177.0.0.01", invalid},
		{"012.0.0.1", invalid},
		{"0x7f.0.0.1", invalid},
		{"0x7f000001", invalid},
		{"0xa9fea9fe", invalid},
		{"0xA9.0xFE.0xA9.0xFE", invalid},
		{"2130706433", invalid},
		{"2852039166", invalid},
		{"127.1", invalid},
		{"10.1", invalid},
		{"169.254.43518", invalid},
		{"0x7f.1", invalid},
		{"0", invalid},
		// IPv6 literals.
		{"[::]", refused},
		{"[::1]", refused},
		{"https://[::1]:8065", refused},
		{"[0:0:0:0:0:0:0:1]", refused},
		{"[::ffff:127.0.0.1]", refused},
		{"[::ffff:7f00:1]", refused},
		{"[::ffff:169.254.169.254]", refused},
		{"[::127.0.0.1]", refused},
		{"[64:ff9b::7f00:1]", refused},
		{"[2002:7f00:1::]", refused},
		{"[2001:db8::1]", refused},
		{"[2001::1]", refused},
		{"[fc00::1]", refused},
		{"[fd12:3456::1]", refused},
		{"[fe80::1]", refused},
		{"[fe80::1%25eth0]", invalid},
		{"[fec0::1]", refused},
		{"[ff02::1]", refused},
		{"[100::1]", refused},
		// Names that are loopback by definition, or resolve into refused ranges.
		{"localhost", refused},
		{"LOCALHOST.", refused},
		{"localhost:8065", refused},
		{"app.localhost", refused},
		{"evil.example", refused},
		{"evil.example.", refused},
		{"EVIL.example:8443", refused},
		{"metadata.example", refused},
		{"intranet.example", refused},
		{"cgnat.example", refused},
		{"v6loop.example", refused},
		{"ula.example", refused},
		{"mapped.example", refused},
		{"nat64.example", refused},
		{"allprivate.example", refused},
		{"zero.example", refused},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d hostile URLs", len(tests))
	}
	for _, tc := range tests {
		if got := checkServerURL(t, c, tc.url); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.url, got, tc.want)
		}
	}
	if d := fn.dials(); len(d) != 0 {
		t.Fatalf("hostile URLs were dialled: %v", d)
	}
}

// A name that answers public once and private the next time (DNS
// rebinding) never gets a private address dialled: the guard dials exactly
// the address it checked.
func TestRebindingResolverNeverReachesPrivate(t *testing.T) {
	u := newUpstream(t, 2*time.Second)
	u.serve(t, mattermostHandler(""))
	u.net.resolveFunc("rebind.example", func(n int) ([]netip.Addr, error) {
		if n%2 == 1 {
			return []netip.Addr{netip.MustParseAddr(publicIP)}, nil
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	})
	// The certificate is for mm.example.com, so the public answer ends in a
	// TLS error; what matters is where the client connected.
	for range 6 {
		u.client.Verify(context.Background(), "https://rebind.example", validToken)
	}
	for _, d := range u.net.dials() {
		if d != publicIP+":443" {
			t.Fatalf("dialled %s after rebinding", d)
		}
	}
	if len(u.net.dials()) == 0 {
		t.Fatal("the public answer was never dialled")
	}

	// Mixed answers: only the public address is dialled.
	u.net.resolve("mixed.example", "10.0.0.1", publicIP, "::1")
	u.client.Verify(context.Background(), "https://mixed.example", validToken)
	for _, d := range u.net.dials() {
		if d != publicIP+":443" {
			t.Fatalf("dialled %s from a mixed answer", d)
		}
	}
}

// MMCONNECT_ALLOWED_NETWORKS opens a refused range for self-hosted servers
// on a private network, and only that range.
func TestAllowedNetworks(t *testing.T) {
	fn := newFakeNet(t)
	ca := newTestCA(t)
	s := startTLS(t, ca.leaf(t, []string{"chat.corp.example"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)), mattermostHandler(""))
	fn.resolve("chat.corp.example", "10.20.30.40")
	fn.route("10.20.30.40:443", s.Listener.Addr().String())
	fn.resolve("other.corp.example", "192.168.1.1")
	c := mattermost.New(mattermost.Options{Timeout: time.Second, RootCAs: ca.pool, Resolver: fn, Dial: fn.Dial,
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}})
	if got := checkServerURL(t, c, "chat.corp.example"); got != "" {
		t.Fatalf("allowed private server: %s", got)
	}
	if got := checkServerURL(t, c, "other.corp.example"); got != connection.CodeHostNotAllowed {
		t.Fatalf("private server outside the allowed range: %q", got)
	}
	if got := checkServerURL(t, c, "10.21.0.1"); got != connection.CodeHostNotAllowed {
		t.Fatalf("literal outside the allowed range: %q", got)
	}
}

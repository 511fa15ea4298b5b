package mattermost_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNet is DNS and a network for the client under test: names resolve to
// whatever the test says, and "public" addresses are carried to loopback
// test servers. Nothing leaves the machine; every dial is recorded.
type fakeNet struct {
	t       *testing.T
	mu      sync.Mutex
	hosts   map[string]func(n int) ([]netip.Addr, error) // n counts lookups of that name
	lookups map[string]int
	routes  map[netip.AddrPort]string // public address → loopback listener
	dialled []string
	// read counts bytes the client read from upstream connections.
	read atomic.Int64
}

func newFakeNet(t *testing.T) *fakeNet {
	return &fakeNet{t: t, hosts: map[string]func(int) ([]netip.Addr, error){}, lookups: map[string]int{},
		routes: map[netip.AddrPort]string{}}
}

// resolve makes name always resolve to addrs.
func (f *fakeNet) resolve(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	f.hosts[name] = func(int) ([]netip.Addr, error) { return as, nil }
}

func (f *fakeNet) resolveFunc(name string, fn func(n int) ([]netip.Addr, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[name] = fn
}

// route carries dials of public to the loopback server at target.
func (f *fakeNet) route(public string, target string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[netip.MustParseAddrPort(public)] = target
}

func (f *fakeNet) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	fn, ok := f.hosts[host]
	f.lookups[host]++
	n := f.lookups[host]
	f.mu.Unlock()
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	addrs, err := fn(n)
	// Like net.Resolver, hand IPv4 back as IPv4-mapped IPv6.
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		if a.Is4() {
			a = netip.AddrFrom16(a.As16())
		}
		out[i] = a
	}
	return out, err
}

func (f *fakeNet) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	f.mu.Lock()
	f.dialled = append(f.dialled, address)
	target, ok := f.routes[netip.MustParseAddrPort(address)]
	f.mu.Unlock()
	if !ok {
		f.t.Errorf("dial of %s, which the test did not route", address)
		return nil, fmt.Errorf("test network: no route to %s", address)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, n: &f.read}, nil
}

func (f *fakeNet) dials() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.dialled...)
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// testCA issues certificates for test servers.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mmconnect test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a server certificate for names valid from notBefore to notAfter.
func (ca *testCA) leaf(t *testing.T, names []string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer starts a TLS test server with cert and counts new connections
// (each one a TLS handshake).
type tlsServer struct {
	*httptest.Server
	conns atomic.Int64
}

func startTLS(t *testing.T, cert tls.Certificate, h http.Handler) *tlsServer {
	t.Helper()
	s := &tlsServer{Server: httptest.NewUnstartedServer(h)}
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

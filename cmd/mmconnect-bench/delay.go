package main

import (
	"context"
	"fmt"
	"net"
	neturl "net/url"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// delayProxy forwards TCP connections to a target, holding every chunk it
// reads for a delay before passing it on, in each direction: a database a
// network away, on loopback, for -postgres-delay. The machine's kernel
// has no netem to do this. Go's timers wake at about a millisecond's
// granularity when nothing else is due, so the round trip it adds is
// measured (pingTime), not taken from the delay asked for.
type delayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	mu     sync.Mutex
	conns  map[net.Conn]bool // both ends of every open pair, closed by Close
	closed bool
	wg     sync.WaitGroup
}

// startDelayProxy listens on a loopback port for connections to target.
// Errors: the listener's.
func startDelayProxy(target string, delay time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, target: target, delay: delay, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *delayProxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, closes every open connection and waits for
// their goroutines.
func (p *delayProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *delayProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client, server) {
			client.Close()
			server.Close()
			return
		}
		p.wg.Add(1)
		go p.pair(client, server)
	}
}

// track records a pair as open; false once Close has begun.
func (p *delayProxy) track(a, b net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[a], p.conns[b] = true, true
	return true
}

// pair forwards both ways between client and server until both
// directions have ended, then closes both.
func (p *delayProxy) pair(client, server net.Conn) {
	defer p.wg.Done()
	done := make(chan struct{})
	go func() {
		p.forward(server, client)
		close(done)
	}()
	p.forward(client, server)
	<-done
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
	client.Close()
	server.Close()
}

// chunk is what one read brought, and when it may be written on.
type chunk struct {
	due  time.Time
	data []byte
}

// forward copies src to dst, each chunk p.delay after it was read. At
// src's end it ends dst's writing half, so dst's reader sees EOF; when
// dst stops taking writes, it stops reading src.
func (p *delayProxy) forward(dst, src net.Conn) {
	held := make(chan chunk, 256) // bounded: a slow dst holds src back
	go func() {
		defer close(held)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				held <- chunk{time.Now().Add(p.delay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range held {
		if failed {
			continue // drain, so the reader above is never stuck
		}
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.data); err != nil {
			failed = true
			src.(*net.TCPConn).CloseRead()
		}
	}
	dst.(*net.TCPConn).CloseWrite()
}

// behind is the PostgreSQL URL u with its host:port replaced by addr's,
// and the host:port it named (port 5432 when it named none). Errors: u is
// not a postgres:// URL with a host (a key=value string or a socket
// directory cannot be proxied).
func behind(u, addr string) (proxied, target string, err error) {
	parsed, err := neturl.Parse(u)
	if err != nil || (parsed.Scheme != "postgres" && parsed.Scheme != "postgresql") || parsed.Hostname() == "" {
		return "", "", fmt.Errorf("-postgres-delay needs a postgres:// URL with a host, not %q", u)
	}
	port := parsed.Port()
	if port == "" {
		port = "5432"
	}
	target = net.JoinHostPort(parsed.Hostname(), port)
	parsed.Host = addr
	return parsed.String(), target, nil
}

// pingTime is the median of 21 round trips of SELECT 1 to the database at
// url, on one connection. Errors: the connection's.
func pingTime(url string) (time.Duration, error) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	times := make([]time.Duration, 21)
	for i := range times {
		t0 := time.Now()
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			return 0, err
		}
		times[i] = time.Since(t0)
	}
	slices.Sort(times)
	return times[len(times)/2], nil
}

package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// Through the proxy, bytes arrive whole and in order, each direction at
// least the delay late (a lower bound only: a busy machine adds to it),
// and the end of a stream is passed on.
func TestDelayProxy(t *testing.T) {
	const delay = 20 * time.Millisecond
	p, err := startDelayProxy(echoServer(t), delay)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct {
		name string
		size int
	}{
		{"one byte", 1},
		{"a query's worth", 300},
		{"more than one read", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sent := make([]byte, tc.size)
			for i := range sent {
				sent[i] = byte(i * 7)
			}
			t0 := time.Now()
			go func() {
				c.Write(sent)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c) // to EOF: the echo's end came through
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(t0); took < 2*delay {
				t.Errorf("the round trip took %s, under twice the delay (%s)", took, delay)
			}
			if !bytes.Equal(got, sent) {
				t.Errorf("got %d bytes back, not the %d sent, in order", len(got), len(sent))
			}
		})
	}
}

// Close ends the connections still open through the proxy.
func TestDelayProxyClose(t *testing.T) {
	p, err := startDelayProxy(echoServer(t), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	p.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("read %d bytes after Close, want the connection ended", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection stayed open after Close")
	}
}

func TestBehind(t *testing.T) {
	for _, tc := range []struct {
		url, proxied, target string
		ok                   bool
	}{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:9999/test?sslmode=disable", "127.0.0.1:5432", true},
		{"postgresql://u:p@db.example.com/app", "postgresql://u:p@127.0.0.1:9999/app", "db.example.com:5432", true},
		{"host=127.0.0.1 dbname=test", "", "", false},
		{"postgres:///test?host=/var/run/postgresql", "", "", false},
	} {
		proxied, target, err := behind(tc.url, "127.0.0.1:9999")
		if (err == nil) != tc.ok || proxied != tc.proxied || target != tc.target {
			t.Errorf("behind(%q) = %q, %q, %v", tc.url, proxied, target, err)
		}
	}
}

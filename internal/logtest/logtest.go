// Package logtest captures log output in tests that run servers on several
// goroutines, so a test can read what was logged and grep it for secrets.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that is safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

package logging

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Stream is the log's way out: lines written to it go out at once, and
// lines written to its Deferred writer (the access log's, one per request)
// may wait up to an interval to go out together. On a machine where a
// write to stderr costs about as much as serving a read from the row
// cache, writing each access line on its own cost a sixth of a GET.
//
// A prompt line first writes out the lines held before it, so the log
// keeps the order lines were written in, and warnings and errors are never
// held. Lines are held whole and written whole. A failed write loses only
// the lines it carried: the next write tries again (zapcore's
// BufferedWriteSyncer, the library that does this, keeps a bufio.Writer's
// first error forever, which would silence the log for good after one full
// disk). What is held when the process is killed is lost; Close writes it
// out on a clean stop.
type Stream struct {
	out      io.Writer
	interval time.Duration
	size     int

	mu     sync.Mutex // guards the fields below and orders writes to out
	held   []byte     // whole lines, oldest first; the timer runs while any are held
	closed bool
	timer  *time.Timer

	lost atomic.Uint64 // lines failed writes took with them
}

// streamSize bounds the lines a Stream holds: more are written out at once.
const streamSize = 64 << 10

// NewStream returns a Stream writing to out whose deferred lines wait at
// most interval; with interval 0 every line goes out at once.
func NewStream(out io.Writer, interval time.Duration) *Stream {
	s := &Stream{out: out, interval: interval, size: streamSize}
	s.timer = time.AfterFunc(time.Hour, s.flushHeld)
	s.timer.Stop()
	return s
}

// Write writes p, and the lines held before it, now. Errors: out's.
func (s *Stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeNow(p)
}

// writeNow writes the held lines and p out, in one write. The caller
// holds mu. Errors: out's.
func (s *Stream) writeNow(p []byte) (int, error) {
	if len(s.held) == 0 {
		return s.emit(p)
	}
	s.held = append(s.held, p...)
	return len(p), s.writeHeld()
}

// emit writes b out in one write, counting the lines a failed write
// loses. The caller holds mu. Errors: out's.
func (s *Stream) emit(b []byte) (int, error) {
	n, err := s.out.Write(b)
	if err != nil {
		s.lost.Add(lines(b))
	}
	return n, err
}

// lines counts the lines in p.
func lines(p []byte) uint64 { return uint64(bytes.Count(p, []byte("\n"))) }

// Lost is how many lines failed writes out have lost, for the operator's
// metrics: a log that cannot be written cannot say so itself.
func (s *Stream) Lost() uint64 { return s.lost.Load() }

// Deferred is the writer for lines that may wait: slog handlers write one
// whole line per call, as a Stream needs.
func (s *Stream) Deferred() io.Writer { return deferred{s} }

type deferred struct{ s *Stream }

// Write holds p to be written with others, within the Stream's interval or
// once the held lines reach its size; with no interval, or once the Stream
// is closed, it writes p at once. Errors: out's, for a line written at
// once; a held line's failed write loses it, and the next lines try again.
func (d deferred) Write(p []byte) (int, error) {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.interval == 0 || s.closed {
		return s.writeNow(p)
	}
	if len(s.held)+len(p) > s.size {
		s.writeHeld()
	}
	if len(s.held) == 0 { // the first line held waits at most the interval
		s.timer.Reset(s.interval)
	}
	s.held = append(s.held, p...)
	return len(p), nil
}

// flushHeld is the timer's: it writes out what is held.
func (s *Stream) flushHeld() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeHeld()
}

// writeHeld writes the held lines out and forgets them, written or not.
// The caller holds mu. Errors: out's.
func (s *Stream) writeHeld() error {
	if len(s.held) == 0 {
		return nil
	}
	_, err := s.emit(s.held)
	if cap(s.held) > 4*s.size { // a burst of long lines: let it go
		s.held = nil
	} else {
		s.held = s.held[:0]
	}
	return err
}

// Close writes out what is held; lines written after it go out at once.
// Errors: out's.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.timer.Stop()
	return s.writeHeld()
}

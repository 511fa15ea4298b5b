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
//
// A write out that blocks (a full pipe, a stalled log collector) holds up
// the requests that finish meanwhile only once they have filled what a
// Stream holds: their access lines are held behind it, where before each
// waited for the write to end.
type Stream struct {
	out      io.Writer
	interval time.Duration
	size     int

	mu     sync.Mutex // guards the fields below
	held   []byte     // whole lines, oldest first; the timer runs while any are held
	spare  []byte     // a buffer written out, for the next lines to be held in
	closed bool
	timer  *time.Timer

	// outMu orders writes to out. It is taken with mu held (mu, then
	// outMu) and mu let go before the write, so that lines are written in
	// the order they were taken, and deferred lines are held meanwhile
	// rather than waiting for a write that blocks (a full pipe, a slow
	// log collector): only a line that overflows what is held waits.
	outMu sync.Mutex

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
	return s.writeNow(p)
}

// writeNow writes the held lines and p out, in one write. The caller
// holds mu, which writeNow lets go. Errors: out's.
func (s *Stream) writeNow(p []byte) (int, error) {
	b, own := p, false
	if len(s.held) > 0 {
		s.held = append(s.held, p...)
		b, own = s.takeHeld(), true
	}
	s.outMu.Lock()
	err := s.writeOut(b, own)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// takeHeld is the held lines, which the Stream holds no more: the next
// are held in the spare buffer. The caller holds mu.
func (s *Stream) takeHeld() []byte {
	b := s.held
	s.held, s.spare = s.spare[:0], nil
	return b
}

// writeOut writes b out in one write and counts the lines a failed
// write loses; b is the Stream's own buffer when own, kept for the next
// lines held (unless a burst of long lines grew it). The caller holds mu
// and then outMu; writeOut lets go of mu before it writes, and of outMu
// after. Errors: out's.
func (s *Stream) writeOut(b []byte, own bool) error {
	s.mu.Unlock()
	_, err := s.out.Write(b)
	s.outMu.Unlock()
	if err != nil {
		s.lost.Add(lines(b))
	}
	if own && cap(b) <= 4*s.size {
		s.mu.Lock()
		if s.spare == nil {
			s.spare = b[:0]
		}
		s.mu.Unlock()
	}
	return err
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
	if s.interval == 0 || s.closed {
		return s.writeNow(p)
	}
	var full []byte
	if len(s.held)+len(p) > s.size {
		full = s.takeHeld()
	}
	if len(s.held) == 0 { // the first line held waits at most the interval
		s.timer.Reset(s.interval)
	}
	s.held = append(s.held, p...)
	if full == nil {
		s.mu.Unlock()
		return len(p), nil
	}
	s.outMu.Lock() // only a line that overflows what is held waits for a write under way
	s.writeOut(full, true)
	return len(p), nil
}

// flushHeld is the timer's: it writes out what is held. While another
// write is under way it waits for the next tick instead, holding nothing
// up.
func (s *Stream) flushHeld() {
	s.mu.Lock()
	if len(s.held) == 0 {
		s.mu.Unlock()
		return
	}
	if !s.outMu.TryLock() {
		s.timer.Reset(s.interval)
		s.mu.Unlock()
		return
	}
	s.writeOut(s.takeHeld(), true)
}

// Close writes out what is held, after any write under way; lines
// written after it go out at once. Errors: out's.
func (s *Stream) Close() error {
	s.mu.Lock()
	s.closed = true
	s.timer.Stop()
	s.outMu.Lock()
	if len(s.held) == 0 {
		s.outMu.Unlock()
		s.mu.Unlock()
		return nil
	}
	return s.writeOut(s.takeHeld(), true)
}

package logging

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder keeps each write it is given, and fails those it is told to.
type recorder struct {
	mu     sync.Mutex
	writes []string
	fail   int // the next fail writes fail
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return 0, errors.New("disk full")
	}
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.writes...)
}

func TestStreamOrderAndBatching(t *testing.T) {
	type step struct {
		prompt bool // through Write, else through Deferred
		line   string
	}
	for _, tc := range []struct {
		name     string
		interval time.Duration
		size     int
		steps    []step
		close    bool
		want     []string // the writes out, in order
	}{
		{name: "deferred lines wait", interval: time.Hour, size: 1 << 10,
			steps: []step{{false, "a\n"}, {false, "b\n"}}, want: nil},
		{name: "a prompt line takes the held ones with it, in order", interval: time.Hour, size: 1 << 10,
			steps: []step{{false, "a\n"}, {false, "b\n"}, {true, "WARN\n"}, {false, "c\n"}},
			want:  []string{"a\nb\nWARN\n"}},
		{name: "a prompt line alone goes at once", interval: time.Hour, size: 1 << 10,
			steps: []step{{true, "WARN\n"}}, want: []string{"WARN\n"}},
		{name: "close writes what is held", interval: time.Hour, size: 1 << 10,
			steps: []step{{false, "a\n"}, {false, "b\n"}}, close: true, want: []string{"a\nb\n"}},
		{name: "past the size, the held lines go out whole", interval: time.Hour, size: 5,
			steps: []step{{false, "aa\n"}, {false, "bb\n"}, {false, "cc\n"}}, close: true,
			want: []string{"aa\n", "bb\n", "cc\n"}},
		{name: "no interval: each line at once", interval: 0, size: 1 << 10,
			steps: []step{{false, "a\n"}, {false, "b\n"}, {true, "WARN\n"}},
			want:  []string{"a\n", "b\n", "WARN\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out recorder
			s := NewStream(&out, tc.interval)
			s.size = tc.size
			for _, st := range tc.steps {
				w := s.Deferred()
				if st.prompt {
					w = s
				}
				if n, err := w.Write([]byte(st.line)); n != len(st.line) || err != nil {
					t.Fatalf("write %q = %d, %v", st.line, n, err)
				}
			}
			if tc.close {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if got := out.all(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("writes out = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestStreamIntervalWritesHeld checks the timer writes held lines out
// without any further write.
func TestStreamIntervalWritesHeld(t *testing.T) {
	var out recorder
	s := NewStream(&out, 10*time.Millisecond)
	defer s.Close()
	s.Deferred().Write([]byte("a\n"))
	for deadline := time.Now().Add(10 * time.Second); len(out.all()) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the held line was never written")
		}
	}
	if got := out.all(); len(got) != 1 || got[0] != "a\n" {
		t.Fatalf("writes out = %q", got)
	}
}

// TestStreamGoesOnAfterAFailedWrite checks that a failed write loses only
// its lines: the log is not silenced for good.
func TestStreamGoesOnAfterAFailedWrite(t *testing.T) {
	out := recorder{fail: 1}
	s := NewStream(&out, time.Hour)
	s.Deferred().Write([]byte("lost\n"))
	if _, err := s.Write([]byte("WARN lost\n")); err == nil {
		t.Fatal("a failed write out was not reported to the prompt line's writer")
	}
	s.Deferred().Write([]byte("a\n"))
	if _, err := s.Write([]byte("WARN\n")); err != nil {
		t.Fatal(err)
	}
	s.Deferred().Write([]byte("b\n"))
	out.fail = 1
	s.Write([]byte("WARN lost too\n")) // held b goes with it
	s.Deferred().Write([]byte("c\n"))
	s.Close()
	if got := out.all(); fmt.Sprint(got) != fmt.Sprint([]string{"a\nWARN\n", "c\n"}) {
		t.Fatalf("writes out = %q", got)
	}
	if s.Lost() != 4 {
		t.Fatalf("Lost() = %d, want the 4 lines of the failed writes", s.Lost())
	}
	// After Close, deferred lines go out at once.
	s.Deferred().Write([]byte("late\n"))
	if got := out.all(); got[len(got)-1] != "late\n" {
		t.Fatalf("a line after Close was held: %q", got)
	}
}

// TestStreamConcurrent writes from many goroutines at once, some lines
// held and some prompt, and checks every line comes out once, whole, and
// in its writer's order.
func TestStreamConcurrent(t *testing.T) {
	var out recorder
	s := NewStream(&out, time.Millisecond)
	s.size = 256
	var wg sync.WaitGroup
	const writers, lines = 8, 500
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				w := s.Deferred()
				if i%50 == 0 {
					w = s
				}
				fmt.Fprintf(w, "%d-%d %s\n", g, i, strings.Repeat("x", i%40))
			}
		}()
	}
	wg.Wait()
	s.Close()
	seen := map[string]bool{}
	last := map[int]int{} // each writer's lines come out in the order it wrote them
	for _, line := range strings.Split(strings.TrimSuffix(strings.Join(out.all(), ""), "\n"), "\n") {
		var g, i int
		var pad string
		if n, _ := fmt.Sscanf(line, "%d-%d %s", &g, &i, &pad); n < 2 || (i%40 != 0 && pad != strings.Repeat("x", i%40)) || seen[line] {
			t.Fatalf("line %q is torn or repeated", line)
		}
		if prev, ok := last[g]; ok && i != prev+1 {
			t.Fatalf("writer %d's line %d came out after its line %d", g, i, prev)
		}
		last[g] = i
		seen[line] = true
	}
	if len(seen) != writers*lines {
		t.Fatalf("%d lines came out, want %d", len(seen), writers*lines)
	}
}

// gate is an out whose first write blocks until release is closed: a
// full pipe, a log collector that stalls.
type gate struct {
	recorder
	entered chan struct{} // closed when the first write begins
	release chan struct{}
	once    sync.Once
}

func (g *gate) Write(p []byte) (int, error) {
	first := false
	g.once.Do(func() { first = true; close(g.entered) })
	if first {
		<-g.release
	}
	return g.recorder.Write(p)
}

// A write out that blocks holds up no deferred line written meanwhile,
// whether the timer's write or a prompt line's is the one blocked, and
// the timer coming round meanwhile (every millisecond in the first case)
// waits for the next tick rather than for the write: the lines are held,
// and go out after it, in order.
func TestStreamHoldsLinesWhileAWriteBlocks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		blocked  func(s *Stream) // starts the write out that blocks
		first    string          // what that write carries
	}{
		{"the timer's", time.Millisecond, func(s *Stream) { s.Deferred().Write([]byte("a\n")) }, "a\n"},
		{"a prompt line's", time.Hour, func(s *Stream) {
			s.Deferred().Write([]byte("a\n"))
			go s.Write([]byte("WARN\n"))
		}, "a\nWARN\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := &gate{entered: make(chan struct{}), release: make(chan struct{})}
			s := NewStream(out, tc.interval)
			tc.blocked(s)
			<-out.entered
			done := make(chan struct{})
			var meanwhile strings.Builder
			go func() {
				for i := range 50 {
					line := fmt.Sprintf("b%d\n", i)
					meanwhile.WriteString(line)
					s.Deferred().Write([]byte(line))
					time.Sleep(time.Millisecond) // the timer comes round
				}
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("a deferred line waited for a write out that blocks")
			}
			close(out.release)
			s.Close()
			got := out.all()
			if len(got) < 2 || got[0] != tc.first || strings.Join(got[1:], "") != meanwhile.String() {
				t.Fatalf("writes out = %q, want %q and then the lines written meanwhile", got, tc.first)
			}
		})
	}
}

package api

import (
	"math/rand/v2"
	"testing"
	"time"
)

// formatTime writes what time.Format writes with timeFormat, for any
// instant and location: the edges of the fast path's years, the ends of
// days, months and leap years, fractions it must truncate, and random
// instants from before year 0 to after 9999.
func TestFormatTime(t *testing.T) {
	east := time.FixedZone("east", 14*3600)
	west := time.FixedZone("west", -12*3600)
	cases := []time.Time{
		{},
		time.Unix(0, 0),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2024, 2, 29, 23, 59, 59, 999_999_500, time.UTC),
		time.Date(2026, 11, 27, 0, 0, 0, 1_000, east),
		time.Date(2026, 1, 1, 0, 0, 0, 999, west),
		time.Unix(1<<40, 123_456_789),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		sec := rng.Int64N(2*400_000_000_000) - 400_000_000_000 // years -10700 to 14600
		loc := []*time.Location{time.UTC, east, west, time.Local}[rng.IntN(4)]
		cases = append(cases, time.Unix(sec, rng.Int64N(1e9)).In(loc))
	}
	for _, c := range cases {
		if got, want := formatTime(c), c.UTC().Format(timeFormat); got != want {
			t.Fatalf("formatTime(%v) = %q, want %q", c, got, want)
		}
	}
}

func BenchmarkFormatTime(b *testing.B) {
	t := time.Date(2026, 11, 27, 10, 32, 31, 123_456_789, time.UTC)
	b.Run("formatTime", func(b *testing.B) {
		for b.Loop() {
			_ = formatTime(t)
		}
	})
	b.Run("time.Format", func(b *testing.B) {
		for b.Loop() {
			_ = t.UTC().Format(timeFormat)
		}
	})
}

package api

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
)

// Rate is how many requests may be made per period, in a burst at most
// that many.
type Rate struct {
	N      int
	Period time.Duration
}

func (r Rate) String() string { return fmt.Sprintf("%d per %s", r.N, r.Period) }

// RateLimits bound what makes mmconnect call out (a connect, a verify), per
// caller. They are held per replica, in memory: they guard against a flood
// from one caller without a database write on every request; behind a load
// balancer of n replicas a caller may get up to n times the rate, and the
// per-host limit on outbound requests still bounds what reaches any one
// Mattermost server. A zero Rate is no limit.
type RateLimits struct {
	PerAPIKey  Rate
	PerSession Rate
	// PerIP applies to connect sessions (browsers); an app's backend calls
	// from one address for all its users, so it is limited by its key.
	PerIP Rate
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// limiter keeps a token bucket per caller, forgetting callers idle for an
// hour and never keeping more than maxCallers.
type limiter struct {
	name    string // the limit, as metrics name it: api_key, session or ip
	rate    Rate
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const maxCallers = 100_000

func newLimiter(name string, r Rate) *limiter {
	if r.N <= 0 || r.Period <= 0 {
		return nil
	}
	return &limiter{name: name, rate: r, buckets: map[string]*bucket{}}
}

// allow takes one request from key's bucket; when it is empty, it says how
// long until there is one again.
func (l *limiter) allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute || len(l.buckets) >= maxCallers {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > time.Hour || len(l.buckets) >= maxCallers {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(float64(l.rate.N)/l.rate.Period.Seconds()), l.rate.N)}
		l.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimitedError: a caller went over its rate; RetryAfter says when to
// try again.
type rateLimitedError struct {
	who        string
	limit      Rate
	retryAfter time.Duration
}

func (e *rateLimitedError) Error() string { return "rate limited: " + e.who }

func (e *rateLimitedError) retryAfterSeconds() string {
	return fmt.Sprint(int(math.Ceil(e.retryAfter.Seconds())))
}

type rateLimiters struct {
	key, session, ip *limiter
	now              func() time.Time
}

func newRateLimiters(rl *RateLimits) *rateLimiters {
	if rl == nil {
		return nil
	}
	now := rl.Now
	if now == nil {
		now = time.Now
	}
	return &rateLimiters{key: newLimiter("api_key", rl.PerAPIKey), session: newLimiter("session", rl.PerSession),
		ip: newLimiter("ip", rl.PerIP), now: now}
}

// names are the limits in force (a zero Rate is none), as metrics name
// them.
func (r *rateLimiters) names() []string {
	var out []string
	for _, l := range []*limiter{r.key, r.session, r.ip} {
		if l != nil {
			out = append(out, l.name)
		}
	}
	return out
}

// outbound limits a route that makes mmconnect call a Mattermost server.
func (s *Server) outbound(next echo.HandlerFunc) echo.HandlerFunc {
	if s.limits == nil {
		return next
	}
	return func(c echo.Context) error {
		now := s.limits.now()
		check := func(l *limiter, who, key string) error {
			if ok, wait := l.allow(key, now); !ok {
				if s.deps.Metrics != nil {
					s.deps.Metrics.RateLimited(l.name)
				}
				return &rateLimitedError{who: who, limit: l.rate, retryAfter: wait}
			}
			return nil
		}
		if sess := sessionOf(c); sess != nil {
			if err := check(s.limits.session, "this connect session", sess.ID); err != nil {
				return err
			}
			if err := check(s.limits.ip, "this address", c.RealIP()); err != nil {
				return err
			}
		} else if err := check(s.limits.key, "this API key", apiKeyOf(c)); err != nil {
			return err
		}
		return next(c)
	}
}

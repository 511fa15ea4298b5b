package main

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mmconnect/mmconnect/internal/audit"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/idempotency"
	"github.com/mmconnect/mmconnect/internal/metrics"
	"github.com/mmconnect/mmconnect/internal/store"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// How often each kind of background work looks for something to do. Every
// replica runs all of them; the store's claims make each item one
// replica's.
const (
	recheckPoll    = 5 * time.Second
	deliveryPoll   = time.Second
	revocationPoll = 30 * time.Second
	retentionPoll  = 10 * time.Minute
	// deliveredKept is how long settled webhook deliveries stay listed.
	deliveredKept = 7 * 24 * time.Hour
)

// startBackground runs the re-check sweep, webhook deliveries, upstream
// revocation retries and retention until ctx ends; Wait on the result.
func startBackground(ctx context.Context, svc *connection.Service, hooks *webhook.Service, keys *idempotency.Service, trail *audit.Service, log *slog.Logger) *sync.WaitGroup {
	var wg sync.WaitGroup
	loop := func(name string, every time.Duration, wake <-chan struct{}, round func(context.Context) (int, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				// Repeat while a round found work, so a backlog drains
				// without waiting for the next tick.
				for {
					n, err := round(ctx)
					if err != nil && ctx.Err() == nil {
						log.Error("background "+name, "err", err)
					}
					if n == 0 || err != nil || ctx.Err() != nil {
						break
					}
				}
				// Jitter keeps replicas started together out of step.
				t := time.NewTimer(every - rand.N(every/5+1))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-wake:
					t.Stop()
				case <-t.C:
				}
			}
		}()
	}
	loop("re-check", recheckPoll, nil, svc.RecheckDue)
	loop("upstream revocation", revocationPoll, nil, svc.RetryRevocations)
	loop("retention", retentionPoll, nil, func(ctx context.Context) (int, error) {
		n, err := svc.PurgeRevoked(ctx)
		if n > 0 {
			log.Info("deleted revoked connections past their retention", "count", n)
		}
		if _, perr := hooks.Prune(ctx, deliveredKept); perr != nil && err == nil {
			err = perr
		}
		if _, perr := keys.Prune(ctx); perr != nil && err == nil {
			err = perr
		}
		if _, perr := trail.Prune(ctx); perr != nil && err == nil {
			err = perr
		}
		return n, err
	})
	if hooks.Enabled() {
		loop("webhook delivery", deliveryPoll, hooks.Wake(), hooks.DeliverDue)
	}
	return &wg
}

// gaugeEvery is how often the connections-by-status gauge is re-read: from
// the database, so it is right with any number of replicas, and never per
// scrape.
const gaugeEvery = 15 * time.Second

func refreshConnectionGauge(ctx context.Context, st *store.Store, meters *metrics.Metrics, log *slog.Logger) {
	for {
		if counts, err := st.CountByStatus(ctx); err == nil {
			meters.SetConnections(counts)
		} else if ctx.Err() == nil {
			log.Warn("count connections for metrics", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(gaugeEvery):
		}
	}
}

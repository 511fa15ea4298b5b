package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// AttemptTimeout bounds one delivery attempt: a receiver must answer 2xx
// within it.
const AttemptTimeout = 10 * time.Second

// Secrets parses MMCONNECT_WEBHOOK_SECRET: one or more Standard Webhooks
// secrets ("whsec_" and base64 of 24 to 64 random bytes) separated by
// spaces; every delivery is signed with each, so a receiver can rotate.
// Errors name the secret by position, never its value.
func Secrets(s string) ([][]byte, error) {
	var out [][]byte
	for i, f := range strings.Fields(s) {
		raw, ok := strings.CutPrefix(f, "whsec_")
		if !ok {
			return nil, fmt.Errorf("secret %d does not start with whsec_", i+1)
		}
		key, err := base64Std(raw)
		if err != nil || len(key) < 24 || len(key) > 64 {
			return nil, fmt.Errorf("secret %d is not whsec_ and base64 of 24 to 64 bytes (e.g. \"whsec_$(openssl rand -base64 32)\")", i+1)
		}
		out = append(out, key)
	}
	if len(out) == 0 {
		return nil, errors.New("no secret given")
	}
	return out, nil
}

// Render turns an event into the JSON body receivers get.
type Render func(connection.Event) ([]byte, error)

// Options configure the deliveries.
type Options struct {
	// URL is the receiver; empty turns webhooks off (events are then not
	// recorded at all, see connection.WithEvents).
	URL string
	// Secrets sign each delivery (see Secrets).
	Secrets [][]byte
	// Client is built by the outbound package: timeouts, no redirects.
	Client *http.Client
	Render Render
	// Now is the clock (tests).
	Now func() time.Time
	// Concurrency is how many deliveries (of different connections) are
	// sent at once.
	Concurrency int
	// Observe, when set, is told each attempt's outcome (delivered,
	// pending, failed), for metrics.
	Observe func(outcome string)
}

// Service delivers events and lets operators see and retry deliveries.
type Service struct {
	store   Store
	opts    Options
	signers []*standardwebhooks.Webhook
	wake    chan struct{}
}

// NewService builds the deliveries service. Errors: a malformed secret.
func NewService(store Store, opts Options) (*Service, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Concurrency < 1 {
		opts.Concurrency = 4
	}
	s := &Service{store: store, opts: opts, wake: make(chan struct{}, 1)}
	for _, key := range opts.Secrets {
		wh, err := standardwebhooks.NewWebhookRaw(key)
		if err != nil {
			return nil, err
		}
		s.signers = append(s.signers, wh)
	}
	if opts.URL != "" && len(s.signers) == 0 {
		return nil, errors.New("a webhook URL needs at least one secret")
	}
	return s, nil
}

// Enabled tells whether a receiver is configured.
func (s *Service) Enabled() bool { return s.opts.URL != "" }

// Wake is signalled when there is something to deliver now (a ping, a
// retry); the delivery loop also polls.
func (s *Service) Wake() <-chan struct{} { return s.wake }

// Notify asks the delivery loop to look for due deliveries now.
func (s *Service) Notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// DeliverDue runs one round: it claims the deliveries that are due and
// first in their connection's queue and sends each once. It returns how
// many it claimed. Errors: the store's, joined.
func (s *Service) DeliverDue(ctx context.Context) (int, error) {
	if !s.Enabled() {
		return 0, nil
	}
	now := connection.Truncate(s.opts.Now())
	lease := now.Add(3 * AttemptTimeout)
	due, err := s.store.ClaimDeliveries(ctx, now, s.opts.Concurrency*4, lease)
	if err != nil {
		return 0, err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, s.opts.Concurrency)
	)
	for _, d := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.attempt(ctx, d, lease); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return len(due), errors.Join(errs...)
}

// attempt sends one delivery and records the outcome.
func (s *Service) attempt(ctx context.Context, d Delivery, lease time.Time) error {
	body, err := s.opts.Render(d.Event)
	if err != nil {
		return fmt.Errorf("render %s: %w", d.Event.ID, err)
	}
	status, sendErr := s.send(ctx, d.Event.ID, body)
	now := connection.Truncate(s.opts.Now())
	o := Outcome{At: now, ResponseStatus: status, Deadline: d.Deadline}
	if d.Attempts == 0 {
		// The retry window starts with the first attempt, so an event that
		// waited behind an earlier one of its connection gets all of it.
		o.Deadline = now.Add(RetryWindow)
	}
	switch {
	case sendErr == nil:
		o.Status, o.NextAttemptAt = StatusDelivered, now
	default:
		o.Error = sendErr.Error()
		next := now.Add(backoff(d.Attempts))
		switch {
		case !now.Before(o.Deadline):
			o.Status, o.NextAttemptAt = StatusFailed, now
		case next.After(o.Deadline):
			o.Status, o.NextAttemptAt = StatusPending, o.Deadline
		default:
			o.Status, o.NextAttemptAt = StatusPending, next
		}
	}
	if s.opts.Observe != nil {
		s.opts.Observe(string(o.Status))
	}
	return s.store.RecordAttempt(ctx, d.Event.ID, lease, o)
}

// send posts one signed body; it returns the answer's status (0 if none)
// and an error unless the receiver answered 2xx within AttemptTimeout.
func (s *Service) send(ctx context.Context, id string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts := s.opts.Now()
	sigs := make([]string, len(s.signers))
	for i, wh := range s.signers {
		if sigs[i], err = wh.Sign(id, ts, body); err != nil {
			return 0, err
		}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mmconnect-webhooks")
	req.Header.Set(standardwebhooks.HeaderWebhookID, id)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, strings.Join(sigs, " "))
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("no answer within %s", AttemptTimeout)
		}
		return 0, errors.New(describeSendError(err))
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 16<<10)
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("answered %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// describeSendError keeps the cause of a failed request without the URL,
// which may hold credentials of the receiver's.
func describeSendError(err error) string {
	if inner := errors.Unwrap(err); inner != nil {
		return inner.Error()
	}
	return err.Error()
}

// backoff after the attempt-th failed attempt: 5 s doubling to an hour,
// with up to a fifth taken off at random.
func backoff(attempt int) time.Duration {
	d := time.Hour
	if attempt < 20 {
		d = min(5*time.Second<<attempt, time.Hour)
	}
	return d - rand.N(d/5+1)
}

// Ping queues a ping event for delivery now. Errors: ErrDisabled, the
// store's.
func (s *Service) Ping(ctx context.Context) (Delivery, error) {
	if !s.Enabled() {
		return Delivery{}, ErrDisabled
	}
	now := connection.Truncate(s.opts.Now())
	d := Delivery{Event: connection.Event{ID: connection.NewEventID(), Type: connection.EventPing, At: now}}
	if err := s.store.AddDelivery(ctx, d); err != nil {
		return Delivery{}, err
	}
	s.Notify()
	return s.store.GetDelivery(ctx, d.Event.ID)
}

// Retry makes a failed delivery pending again, due now, with a fresh
// retry window. Errors: ErrDisabled, ErrNotFound, ErrNotFailed, the
// store's.
func (s *Service) Retry(ctx context.Context, id string) (Delivery, error) {
	if !s.Enabled() {
		return Delivery{}, ErrDisabled
	}
	now := connection.Truncate(s.opts.Now())
	d, err := s.store.Requeue(ctx, id, now, now.Add(RetryWindow))
	if err != nil {
		return Delivery{}, err
	}
	s.Notify()
	return d, nil
}

// Query is a listing request; Cursor is a previous page's NextCursor.
type Query struct {
	Status *Status
	Limit  int
	Cursor string
}

// Page is one page of deliveries, newest first.
type Page struct {
	Deliveries []Delivery
	NextCursor string
}

// List pages through deliveries. Errors: connection.ErrBadCursor, the
// store's.
func (s *Service) List(ctx context.Context, q Query) (Page, error) {
	ds, next, err := connection.ReadPage(q.Limit, q.Cursor, "evt_", func(after *connection.Position, n int) ([]Delivery, error) {
		return s.store.ListDeliveries(ctx, ListFilter{Status: q.Status, After: after, Limit: n})
	}, func(d Delivery) connection.Position {
		return connection.Position{CreatedAt: d.CreatedAt, ID: d.Event.ID}
	})
	return Page{Deliveries: ds, NextCursor: next}, err
}

// Prune deletes deliveries settled more than keep ago. Errors: the
// store's.
func (s *Service) Prune(ctx context.Context, keep time.Duration) (int, error) {
	return s.store.PruneSettled(ctx, s.opts.Now().Add(-keep))
}

package connection

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Listing limits.
const (
	DefaultListLimit = 50
	MaxListLimit     = 200
)

// ErrBadCursor: a list cursor that this service did not issue.
var ErrBadCursor = errors.New("invalid cursor")

// maxAttempts bounds the retries of an optimistic write that lost a race.
// Each round of a race has a winner, so this many outlasts that many
// identical requests arriving together.
const maxAttempts = 12

// lostRace waits before attempt (from 1) of an optimistic write that lost
// a race: a few random milliseconds, more with each loss, so racers retrying
// together spread out. Errors: the context's, when it ends first.
func lostRace(ctx context.Context, attempt int) error {
	if attempt == 0 {
		return nil
	}
	t := time.NewTimer(rand.N(time.Duration(attempt) * 2 * time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Service is the connection lifecycle. It is safe for concurrent use; every
// rule that must hold across processes is enforced by the Store.
type Service struct {
	store     Store
	verifier  Verifier
	sealer    Sealer
	allowHTTP bool
	now       func() time.Time
	newID     func() string

	// events says whether changes record events for webhooks.
	events bool
	// revoker, when set and revokeUpstream is on, revokes tokens in
	// Mattermost on a revoke.
	revoker        Revoker
	revokeUpstream bool
	recheck        RecheckOptions
	// retention is how long a revoked connection is kept; zero keeps it.
	retention time.Duration
	// maxPerEndUser caps an end user's live connections; zero: no cap.
	maxPerEndUser int

	holdMu sync.Mutex
	// held are hosts that answered 429, left alone until the time given.
	held map[string]time.Time
}

// RecheckOptions set the background re-checks.
type RecheckOptions struct {
	// Interval is how old a connection's last check may grow; zero turns
	// background re-checks off.
	Interval time.Duration
	// Concurrency is how many checks run at once.
	Concurrency int
}

// Option changes a Service at construction.
type Option func(*Service)

// WithClock makes the service read time from now (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithAllowHTTP lets server URLs use plain http://.
func WithAllowHTTP(allow bool) Option { return func(s *Service) { s.allowHTTP = allow } }

// WithEvents makes every change record its events for webhook delivery.
func WithEvents(on bool) Option { return func(s *Service) { s.events = on } }

// WithRevoker lets a revoke reach Mattermost (unless upstream is false or
// the caller asks otherwise), and lets checks learn token ids.
func WithRevoker(r Revoker, upstream bool) Option {
	return func(s *Service) { s.revoker, s.revokeUpstream = r, upstream }
}

// WithRecheck sets the background re-checks.
func WithRecheck(o RecheckOptions) Option { return func(s *Service) { s.recheck = o } }

// WithMaxPerEndUser caps each end user's live connections at n (zero: no
// cap); connections without an end user are not capped.
func WithMaxPerEndUser(n int) Option { return func(s *Service) { s.maxPerEndUser = n } }

// WithRetention deletes revoked connections older than d (zero keeps them).
func WithRetention(d time.Duration) Option { return func(s *Service) { s.retention = d } }

// NewService wires the lifecycle to its dependencies.
func NewService(store Store, verifier Verifier, sealer Sealer, opts ...Option) *Service {
	s := &Service{store: store, verifier: verifier, sealer: sealer, now: time.Now, newID: NewID,
		held: map[string]time.Time{}, recheck: RecheckOptions{Concurrency: 4}}
	for _, o := range opts {
		o(s)
	}
	if s.recheck.Concurrency < 1 {
		s.recheck.Concurrency = 1
	}
	return s
}

// save is the one path by which a connection changes: it fixes what
// follows from the new status (InvalidSince), adds the events the change
// causes, and has the store write the change and its events in one
// transaction. old is nil for a new connection. Errors: the store's.
func (s *Service) save(ctx context.Context, old *Connection, c *Connection, ch Change) error {
	switch {
	case c.Status == StatusInvalid && (old == nil || old.Status != StatusInvalid):
		at := c.UpdatedAt
		c.InvalidSince = &at
	case c.Status == StatusActive:
		c.InvalidSince = nil
	}
	ch.Events = append(ch.Events, s.newEvents(*c, eventsFor(old, *c)...)...)
	if c.SealedToken != nil && (old == nil || c.Generation != old.Generation) {
		ch.SealingKey = s.sealer.SealedWith(c.SealedToken)
	}
	if old == nil {
		return s.store.Create(ctx, *c, ch)
	}
	return s.store.Update(ctx, *c, old.Generation, ch)
}

// newEvents builds events about c, when events are recorded at all.
func (s *Service) newEvents(c Connection, types ...EventType) []Event {
	if !s.events {
		return nil
	}
	out := make([]Event, len(types))
	for i, t := range types {
		out[i] = Event{ID: NewEventID(), Type: t, At: c.UpdatedAt, Connection: Snapshot(c)}
	}
	return out
}

// nextCheck is when a connection checked at now is due again: one
// interval later, plus up to a tenth more at random so that connections
// made together do not all come due together.
func (s *Service) nextCheck(now time.Time) time.Time {
	iv := s.recheck.Interval
	if iv <= 0 {
		return now
	}
	return now.Add(iv + rand.N(iv/10+1)).Truncate(time.Microsecond)
}

// ConnectInput is what a user submits to connect. Audit, when set, says
// who asked (Actor, ClientIP, RequestID): the connect is then recorded in
// the audit trail in the same transaction as the connection.
type ConnectInput struct {
	ServerURL string
	Token     string
	EndUserID *string
	Audit     *AuditEvent
}

// Connect checks the input's shape, proves the token against the server and
// stores the connection. If a connection that is not revoked exists for the
// same server, Mattermost user and end user, its token is replaced instead
// and created is false. Errors: *ValidationError (nothing was sent
// upstream), *UpstreamError, ErrTooManyConnections, ErrUnavailable.
func (s *Service) Connect(ctx context.Context, in ConnectInput) (c Connection, created bool, err error) {
	serverURL, token, err := s.validate(in)
	if err != nil {
		return Connection{}, false, err
	}
	ident, err := s.verifier.Verify(ctx, serverURL, token)
	if err != nil {
		return Connection{}, false, err
	}
	if ident.ServerURL != "" {
		serverURL = ident.ServerURL
	}
	tokenID := s.identifyToken(ctx, serverURL, token, ident)
	// Most connects are new: insert first, and look for the connection to
	// reconnect to only when the insert conflicts with it. The store
	// reports that conflict before the cap, so a reconnect at the cap gets
	// here too.
	c, err = s.create(ctx, in, serverURL, token, tokenID, ident)
	if !errors.Is(err, ErrConflict) {
		return c, err == nil, err
	}
	for attempt := range maxAttempts {
		if err := lostRace(ctx, attempt); err != nil {
			return Connection{}, false, err
		}
		existing, err := s.store.FindLive(ctx, serverURL, ident.User.ID, in.EndUserID)
		switch {
		case err == nil:
			now := Truncate(s.now())
			c = existing
			if err := s.applyToken(&c, token, tokenID, ident, now); err != nil {
				return Connection{}, false, err
			}
			c.Generation = existing.Generation + 1
			err = s.save(ctx, &existing, &c, Change{Audit: auditFor(in.Audit, c, false, now)})
			if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
				continue // revoked or re-tokened meanwhile: look again
			}
			return c, false, err
		case errors.Is(err, ErrNotFound): // revoked meanwhile
			c, err = s.create(ctx, in, serverURL, token, tokenID, ident)
			if errors.Is(err, ErrConflict) {
				continue // an identical request won the race: reconnect to it
			}
			return c, err == nil, err
		default:
			return Connection{}, false, err
		}
	}
	return Connection{}, false, fmt.Errorf("connect: gave up after %d races: %w", maxAttempts, ErrConflict)
}

// create stores a new connection of ident's account for in's end user,
// holding token. Errors: as save's (ErrConflict when a live one exists
// for them, ErrTooManyConnections).
func (s *Service) create(ctx context.Context, in ConnectInput, serverURL, token, tokenID string, ident Identity) (Connection, error) {
	now := Truncate(s.now())
	c := Connection{ID: s.newID(), ServerURL: serverURL, EndUserID: in.EndUserID, CreatedAt: now, Generation: 1}
	if err := s.applyToken(&c, token, tokenID, ident, now); err != nil {
		return Connection{}, err
	}
	err := s.save(ctx, nil, &c, Change{MaxLivePerEndUser: s.maxPerEndUser, Audit: auditFor(in.Audit, c, true, now)})
	return c, err
}

func (s *Service) validate(in ConnectInput) (serverURL, token string, err error) {
	serverURL, token, fields := CheckConnectInput(in, s.allowHTTP)
	if len(fields) > 0 {
		return "", "", &ValidationError{Fields: fields}
	}
	return serverURL, token, nil
}

// CheckConnectInput applies every field rule of a connect request and
// returns the normalised server URL and token, or every problem at once:
// the one source of these rules, which the HTTP layer reuses.
func CheckConnectInput(in ConnectInput, allowHTTP bool) (serverURL, token string, problems []FieldError) {
	serverURL, fe := ParseServerURL(in.ServerURL, allowHTTP)
	if fe != nil {
		problems = append(problems, *fe)
	}
	token, fe = ParseToken(in.Token)
	if fe != nil {
		problems = append(problems, *fe)
	}
	if fe := ValidateEndUserID(in.EndUserID); fe != nil {
		problems = append(problems, *fe)
	}
	return serverURL, token, problems
}

// identifyToken learns the token's id in Mattermost, where a revoke may
// need it; a failure to learn it only means a revoke will not reach
// Mattermost.
func (s *Service) identifyToken(ctx context.Context, serverURL, token string, ident Identity) string {
	if s.revoker == nil {
		return ""
	}
	id, err := s.revoker.TokenID(ctx, serverURL, token, ident.AnsweredAt)
	if err != nil {
		return ""
	}
	return id
}

// applyToken makes c an active connection holding token, as just proven.
func (s *Service) applyToken(c *Connection, token, tokenID string, ident Identity, now time.Time) error {
	sealed, err := s.sealer.Seal([]byte(token), []byte(c.ID))
	if err != nil {
		return fmt.Errorf("seal token: %w", err)
	}
	c.SealedToken = sealed
	c.TokenHint = TokenHint(token)
	c.Status = StatusActive
	c.MattermostUser = ident.User
	c.ServerVersion = ident.ServerVersion
	c.UpdatedAt = now
	c.LastVerifiedAt = &now
	c.LastCheckedAt = &now
	c.NextCheckAt = s.nextCheck(now)
	c.TokenID = tokenID
	c.LastError = nil
	return nil
}

// Get returns one connection. Errors: ErrNotFound, ErrUnavailable.
func (s *Service) Get(ctx context.Context, id string) (Connection, error) {
	return s.store.Get(ctx, id)
}

// ListQuery is a listing request; Cursor is the NextCursor of a previous page.
type ListQuery struct {
	EndUserID *string
	Status    *Status
	Limit     int
	Cursor    string
}

// Page is one page of a listing; NextCursor is empty on the last page.
type Page struct {
	Connections []Connection
	NextCursor  string
}

// List pages through connections newest first. Errors: *ValidationError
// (an end user id no connection can have), ErrBadCursor, ErrUnavailable.
func (s *Service) List(ctx context.Context, q ListQuery) (Page, error) {
	if fe := ValidateEndUserID(q.EndUserID); fe != nil {
		return Page{}, &ValidationError{Fields: []FieldError{*fe}}
	}
	cs, next, err := ReadPage(q.Limit, q.Cursor, "conn_", func(after *Position, n int) ([]Connection, error) {
		return s.store.List(ctx, ListFilter{EndUserID: q.EndUserID, Status: q.Status, After: after, Limit: n})
	}, func(c Connection) Position { return Position{CreatedAt: c.CreatedAt, ID: c.ID} })
	return Page{Connections: cs, NextCursor: next}, err
}

// ReadPage reads one page of a keyset listing (connections, webhook
// deliveries, audit events): at most limit items (0: DefaultListLimit)
// after cursor, a NextCursor of an earlier page whose id begins with
// idPrefix (empty: from the start). read is asked for the items after a
// position (nil: the start), one more than the page holds, so that a next
// cursor, at the page's last item (at gives an item's position), is given
// only when more follow. Errors: ErrBadCursor; read's.
func ReadPage[T any](limit int, cursor, idPrefix string, read func(after *Position, n int) ([]T, error),
	at func(T) Position) (items []T, next string, err error) {
	if limit == 0 {
		limit = DefaultListLimit
	}
	var after *Position
	if cursor != "" {
		pos, err := DecodeCursor(cursor, idPrefix)
		if err != nil {
			return nil, "", err
		}
		after = &pos
	}
	if items, err = read(after, limit+1); err != nil {
		return nil, "", err
	}
	if len(items) > limit {
		items = items[:limit]
		next = EncodeCursor(at(items[limit-1]))
	}
	return items, next, nil
}

// Live returns every connection of endUserID that is not revoked, newest
// first, filtered in the store and read in pages, so none is left out.
// Errors: *ValidationError, ErrUnavailable.
func (s *Service) Live(ctx context.Context, endUserID string) ([]Connection, error) {
	if fe := ValidateEndUserID(&endUserID); fe != nil {
		return nil, &ValidationError{Fields: []FieldError{*fe}}
	}
	var out []Connection
	f := ListFilter{EndUserID: &endUserID, Live: true, Limit: MaxListLimit}
	for {
		cs, err := s.store.List(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
		if len(cs) < f.Limit {
			return out, nil
		}
		last := cs[len(cs)-1]
		f.After = &Position{CreatedAt: last.CreatedAt, ID: last.ID}
	}
}

// EncodeCursor makes a keyset position into an opaque cursor.
func EncodeCursor(p Position) string {
	raw := strconv.FormatInt(p.CreatedAt.UnixMicro(), 10) + "." + p.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// DecodeCursor reads a cursor made by EncodeCursor whose id has idPrefix.
// Errors: ErrBadCursor.
func DecodeCursor(s, idPrefix string) (Position, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Position{}, ErrBadCursor
	}
	micros, id, ok := strings.Cut(string(raw), ".")
	if !ok || len(id) <= len(idPrefix) || !strings.HasPrefix(id, idPrefix) {
		return Position{}, ErrBadCursor
	}
	n, err := strconv.ParseInt(micros, 10, 64)
	if err != nil || n < 0 {
		return Position{}, ErrBadCursor
	}
	return Position{CreatedAt: time.UnixMicro(n).UTC(), ID: id}, nil
}

// Verify checks a connection's token against its server now and records the
// outcome: active if accepted, invalid if the server rejected the token, and
// otherwise the status is kept with the failure in LastError. A check that
// raced a revoke, a reconnect or a newer check records nothing and returns
// what is stored. Errors: ErrNotFound, ErrRevoked, ErrUnavailable.
func (s *Service) Verify(ctx context.Context, id string) (Connection, error) {
	c, token, err := s.liveToken(ctx, id)
	if err != nil {
		return Connection{}, err
	}
	upd, err := s.check(ctx, c, token)
	if errors.Is(err, ErrConflict) {
		cur, err := s.store.Get(ctx, id)
		if err != nil {
			return Connection{}, err
		}
		if cur.Status == StatusRevoked {
			return Connection{}, ErrRevoked
		}
		return cur, nil
	}
	return upd, err
}

// check is the one re-check of a stored connection, for Verify and the
// background sweep: it asks the server and records the outcome for the
// generation it checked, unless a newer check was recorded meanwhile.
// Errors: ErrConflict (something newer is stored), ErrUnavailable, and
// mmconnect's own faults.
func (s *Service) check(ctx context.Context, c Connection, token string) (Connection, error) {
	started := Truncate(s.now())
	ident, verr := s.verifier.Verify(ctx, c.ServerURL, token)
	if err := ctx.Err(); err != nil {
		// The caller gave up (a shutdown, a client gone): the server was not
		// heard, so there is nothing to record.
		return Connection{}, err
	}
	now := Truncate(s.now())
	upd := c
	upd.UpdatedAt = now
	upd.LastCheckedAt = &started
	upd.NextCheckAt = s.nextCheck(now)
	var ue *UpstreamError
	switch {
	case verr == nil:
		upd.Status = StatusActive
		upd.MattermostUser = ident.User
		upd.ServerVersion = ident.ServerVersion
		upd.LastVerifiedAt = &now
		upd.LastError = nil
		if upd.TokenID == "" {
			upd.TokenID = s.identifyToken(ctx, c.ServerURL, token, ident)
		}
	case errors.As(verr, &ue):
		upd.LastError = &LastError{Code: ue.Code, Message: ue.Message, At: now}
		if ue.TokenRejected() {
			upd.Status = StatusInvalid
			// This token worked when it was connected: say what changes a
			// working token, not what to check in a fresh one.
			upd.LastError.Message = fmt.Sprintf("The Mattermost server at %s no longer accepts this token, which worked before: "+
				"it was revoked or disabled in Mattermost, the account was deactivated, or personal access tokens were switched off. "+
				"Make a new token (Profile > Security > Personal Access Tokens > Create Token) and connect again.", c.ServerURL)
		}
		if ue.Code == CodeUpstreamRateLimited {
			until := s.hold(c.ServerURL, now, ue.RetryAfter)
			if until.After(upd.NextCheckAt) {
				upd.NextCheckAt = until
			}
		}
	default:
		return Connection{}, verr
	}
	if err := s.save(ctx, &c, &upd, Change{}); err != nil {
		return Connection{}, err
	}
	return upd, nil
}

// RecheckDue runs one round of background re-checks: it claims the
// connections whose check is due and checks them, Concurrency at once. A
// connection of a server that asked to wait (429) is moved to when the wait
// ends instead. It returns how many connections it claimed; errors of
// single checks are joined (each connection is due again next interval).
func (s *Service) RecheckDue(ctx context.Context) (int, error) {
	if s.recheck.Interval <= 0 {
		return 0, nil
	}
	now := Truncate(s.now())
	due, err := s.store.ClaimDue(ctx, now, s.recheck.Concurrency*4, func() time.Time { return s.nextCheck(now) })
	if err != nil {
		return 0, err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, s.recheck.Concurrency)
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for _, c := range due {
		// Take a slot first, so a 429 met by a check still in flight holds
		// back the checks after it.
		sem <- struct{}{}
		if until, held := s.heldUntil(c.ServerURL, now); held {
			<-sem
			if err := s.store.Reschedule(ctx, c.ID, until.Add(rand.N(time.Second))); err != nil && !errors.Is(err, ErrNotFound) {
				fail(err)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			plain, err := s.sealer.Open(c.SealedToken, []byte(c.ID))
			if err != nil {
				fail(fmt.Errorf("open token of %s: %w", c.ID, err))
				return
			}
			if _, err := s.check(ctx, c, string(plain)); err != nil && !errors.Is(err, ErrConflict) {
				fail(fmt.Errorf("re-check %s: %w", c.ID, err))
			}
		}()
	}
	wg.Wait()
	return len(due), errors.Join(errs...)
}

// hold leaves a server alone for retryAfter (at least a minute when it did
// not say) and returns until when.
func (s *Service) hold(serverURL string, now time.Time, retryAfter time.Duration) time.Time {
	if retryAfter <= 0 {
		retryAfter = time.Minute
	}
	until := now.Add(retryAfter)
	host := hostOf(serverURL)
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if until.After(s.held[host]) {
		s.held[host] = until
	}
	return until
}

// heldUntil tells whether a server asked to be left alone past now.
func (s *Service) heldUntil(serverURL string, now time.Time) (time.Time, bool) {
	host := hostOf(serverURL)
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	until, ok := s.held[host]
	if ok && !until.After(now) {
		delete(s.held, host)
		return time.Time{}, false
	}
	return until, ok
}

// hostOf is the host:port part of a server URL: what a rate limit covers.
func hostOf(serverURL string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		return serverURL
	}
	return strings.ToLower(u.Host)
}

// Credentials opens the stored token for the app's backend.
// Errors: ErrNotFound, ErrRevoked, ErrUnavailable.
func (s *Service) Credentials(ctx context.Context, id string) (Credentials, error) {
	c, token, err := s.liveToken(ctx, id)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{ServerURL: c.ServerURL, Token: token, Status: c.Status, LastVerifiedAt: c.LastVerifiedAt}, nil
}

// liveToken loads a connection that is not revoked and opens its token.
// Errors: ErrNotFound, ErrRevoked, ErrUnavailable.
func (s *Service) liveToken(ctx context.Context, id string) (Connection, string, error) {
	c, err := s.store.Get(ctx, id)
	if err != nil {
		return Connection{}, "", err
	}
	if c.Status == StatusRevoked {
		return Connection{}, "", ErrRevoked
	}
	plain, err := s.sealer.Open(c.SealedToken, []byte(c.ID))
	if err != nil {
		return Connection{}, "", fmt.Errorf("open token of %s: %w", c.ID, err)
	}
	return c, string(plain), nil
}

// Revoke erases a connection's token and marks it revoked, then, when
// upstream is true and the operator allows it, revokes the token in
// Mattermost too (within ctx). The local revoke always happens; what became
// of the token upstream is recorded in UpstreamRevocation, and a
// Mattermost that cannot be reached is retried by RetryRevocations.
// Revoking again changes nothing. Errors: ErrNotFound, ErrUnavailable.
func (s *Service) Revoke(ctx context.Context, id string, upstream bool) (Connection, error) {
	for attempt := range maxAttempts {
		if err := lostRace(ctx, attempt); err != nil {
			return Connection{}, err
		}
		c, err := s.store.Get(ctx, id)
		if err != nil {
			return Connection{}, err
		}
		if c.Status == StatusRevoked {
			return c, nil
		}
		now := Truncate(s.now())
		upd := c
		upd.Status = StatusRevoked
		upd.SealedToken = nil
		upd.RevokedAt = &now
		upd.UpdatedAt = now
		upd.Generation = c.Generation + 1
		var ch Change
		switch {
		case !upstream || !s.revokeUpstream || s.revoker == nil:
			upd.UpstreamRevocation = &UpstreamRevocation{Status: RevocationSkipped, At: now,
				Message: "The token was erased here but not revoked in Mattermost; it works there until someone deletes it under Profile > Security > Personal Access Tokens."}
		case c.TokenID == "":
			upd.UpstreamRevocation = &UpstreamRevocation{Status: RevocationTokenUnknown, At: now,
				Message: "The token was erased here, but Mattermost never showed which of the account's tokens it was, so none was revoked there. Delete it in Mattermost under Profile > Security > Personal Access Tokens."}
		default:
			ch.Revocation = &PendingRevocation{ConnectionID: c.ID, ServerURL: c.ServerURL, TokenID: c.TokenID,
				SealedToken: c.SealedToken, CreatedAt: now, NextAttemptAt: now.Add(revocationLease)}
			upd.UpstreamRevocation = &UpstreamRevocation{Status: RevocationPending, At: now,
				Message: "Revoking the token in Mattermost."}
		}
		err = s.save(ctx, &c, &upd, ch)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return Connection{}, err
		}
		if p := ch.Revocation; p != nil {
			r, err := s.revokeNow(ctx, *p)
			if err != nil {
				return upd, nil // still pending: RetryRevocations takes it from here
			}
			upd.UpstreamRevocation = &r
		}
		return upd, nil
	}
	return Connection{}, fmt.Errorf("revoke: gave up after %d races: %w", maxAttempts, ErrConflict)
}

// Upstream revocation retries: the first retry waits revocationLease (so
// the revoke's own attempt is not raced), later ones back off to an hour,
// and after revocationDeadline the token is erased unrevoked.
const (
	revocationLease    = time.Minute
	revocationDeadline = 72 * time.Hour
)

// revokeNow tries to revoke a pending revocation's token in Mattermost and
// records the outcome. Errors: the store's, or a token that cannot be
// opened (it stays pending).
func (s *Service) revokeNow(ctx context.Context, p PendingRevocation) (UpstreamRevocation, error) {
	plain, err := s.sealer.Open(p.SealedToken, []byte(p.ConnectionID))
	if err != nil {
		return UpstreamRevocation{}, fmt.Errorf("open token of %s: %w", p.ConnectionID, err)
	}
	rerr := s.revoker.RevokeToken(ctx, p.ServerURL, string(plain), p.TokenID)
	now := Truncate(s.now())
	r, final := revocationOutcome(rerr, now, now.Sub(p.CreatedAt) >= revocationDeadline)
	next := now.Add(backoff(p.Attempts, 30*time.Second, time.Hour))
	err = s.store.SettleRevocation(ctx, p.ConnectionID, r, final, p.Attempts+1, next)
	return r, err
}

// revocationOutcome names what a revoke call's result means for the token;
// final is false while it is worth trying again.
func revocationOutcome(err error, now time.Time, expired bool) (r UpstreamRevocation, final bool) {
	r.At = now
	var ue *UpstreamError
	switch {
	case err == nil:
		r.Status, r.Message = RevocationRevoked, "Mattermost revoked the token."
	case errors.As(err, &ue) && ue.Code == CodeNotPermitted:
		r.Status, r.Message = RevocationNotPermitted, "Mattermost refused: this account may not revoke its own tokens (only System Admins and accounts given the personal access token role may). The token was erased here; delete it in Mattermost under Profile > Security > Personal Access Tokens."
	case errors.As(err, &ue) && (ue.Code == CodeTokenRejected || ue.Code == CodeTokenUnknown):
		r.Status, r.Message = RevocationRevoked, "The token no longer works in Mattermost (it was already revoked, disabled or deleted there)."
	case expired:
		r.Status, r.Message = RevocationFailed, "Mattermost could not be reached for 72 hours, so the token was erased here without being revoked there. Delete it in Mattermost under Profile > Security > Personal Access Tokens."
	default:
		r.Status, r.Message = RevocationPending, "Mattermost could not be reached to revoke the token; trying again."
		return r, false
	}
	return r, true
}

// RetryRevocations tries again the upstream revocations that are due and
// returns how many it tried. Errors: the store's, joined.
func (s *Service) RetryRevocations(ctx context.Context) (int, error) {
	if s.revoker == nil {
		return 0, nil
	}
	now := Truncate(s.now())
	due, err := s.store.ClaimRevocations(ctx, now, 16, now.Add(revocationLease))
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, p := range due {
		if _, err := s.revokeNow(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	return len(due), errors.Join(errs...)
}

// PurgeRevoked deletes revoked connections older than the retention whose
// webhook events and upstream revocation are settled, recording a
// connection.deleted event with each, and returns how many it deleted.
// Errors: the store's.
func (s *Service) PurgeRevoked(ctx context.Context) (int, error) {
	if s.retention <= 0 {
		return 0, nil
	}
	now := Truncate(s.now())
	cs, err := s.store.Purgeable(ctx, now.Add(-s.retention), 100)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cs {
		c.UpdatedAt = now
		err := s.store.Delete(ctx, c, Change{Events: s.newEvents(c, EventDeleted)})
		if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// backoff is base·2^attempt, capped, with up to a fifth taken off at
// random so that retries of many items spread out.
func backoff(attempt int, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if attempt < 30 {
		d = min(base<<attempt, ceiling)
	}
	return d - rand.N(d/5+1)
}

// Ready tells whether the store answers.
func (s *Service) Ready(ctx context.Context) error { return s.store.Ping(ctx) }

// ObserveTraffic records what an answer to a request made with c's token
// (the proxy) shows: rejected means Mattermost refused the token the way
// it refuses every dead token, and then the connection turns invalid
// exactly as a failed re-check would make it; an accepted answer makes an
// invalid connection active again. Anything else changes nothing. It
// applies only to the generation that made the request and never goes
// back in time. Errors: ErrUnavailable; a race (ErrConflict) is not an
// error, the newer state stands.
func (s *Service) ObserveTraffic(ctx context.Context, c Connection, started time.Time, rejected bool) error {
	now := Truncate(s.now())
	started = Truncate(started)
	upd := c
	switch {
	case rejected && c.Status == StatusInvalid:
		return nil // already recorded: a dead token's every request would write again
	case rejected:
		upd.Status = StatusInvalid
		upd.LastError = &LastError{Code: CodeTokenRejected, At: now, Message: fmt.Sprintf(
			"The Mattermost server at %s refused this token on a proxied request: it was revoked or disabled in Mattermost, "+
				"the account was deactivated, or personal access tokens were switched off. "+
				"Make a new token (Profile > Security > Personal Access Tokens > Create Token) and connect again.", c.ServerURL)}
	case c.Status == StatusInvalid:
		upd.Status = StatusActive
		upd.LastError = nil
		upd.LastVerifiedAt = &now
	default:
		return nil
	}
	upd.UpdatedAt = now
	upd.LastCheckedAt = &started
	err := s.save(ctx, &c, &upd, Change{})
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// ForProxy loads a connection that is not revoked with its token, for a
// request made on its behalf. Errors: ErrNotFound, ErrRevoked,
// ErrSealingKeyMissing, ErrUnavailable.
func (s *Service) ForProxy(ctx context.Context, id string) (Connection, string, error) {
	return s.liveToken(ctx, id)
}

package connection

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
const maxAttempts = 5

// Service is the connection lifecycle. It is safe for concurrent use; every
// rule that must hold across processes is enforced by the Store.
type Service struct {
	store     Store
	verifier  Verifier
	sealer    Sealer
	allowHTTP bool
	now       func() time.Time
	newID     func() string
}

// Option changes a Service at construction.
type Option func(*Service)

// WithClock makes the service read time from now (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithAllowHTTP lets server URLs use plain http://.
func WithAllowHTTP(allow bool) Option { return func(s *Service) { s.allowHTTP = allow } }

// NewService wires the lifecycle to its dependencies.
func NewService(store Store, verifier Verifier, sealer Sealer, opts ...Option) *Service {
	s := &Service{store: store, verifier: verifier, sealer: sealer, now: time.Now, newID: NewID}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ConnectInput is what a user submits to connect.
type ConnectInput struct {
	ServerURL string
	Token     string
	EndUserID *string
}

// Connect checks the input's shape, proves the token against the server and
// stores the connection. If a connection that is not revoked exists for the
// same server, Mattermost user and end user, its token is replaced instead
// and created is false. Errors: *ValidationError (nothing was sent
// upstream), *UpstreamError, ErrUnavailable.
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
	for range maxAttempts {
		now := Truncate(s.now())
		existing, err := s.store.FindLive(ctx, serverURL, ident.User.ID, in.EndUserID)
		switch {
		case err == nil:
			c = existing
			if err := s.applyToken(&c, token, ident, now); err != nil {
				return Connection{}, false, err
			}
			c.Generation = existing.Generation + 1
			err = s.store.Update(ctx, c, existing.Generation)
			if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
				continue // revoked or re-tokened meanwhile: look again
			}
			return c, false, err
		case errors.Is(err, ErrNotFound):
			c = Connection{
				ID:         s.newID(),
				ServerURL:  serverURL,
				EndUserID:  in.EndUserID,
				CreatedAt:  now,
				Generation: 1,
			}
			if err := s.applyToken(&c, token, ident, now); err != nil {
				return Connection{}, false, err
			}
			err = s.store.Create(ctx, c)
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

func (s *Service) validate(in ConnectInput) (serverURL, token string, err error) {
	var fields []FieldError
	serverURL, fe := ParseServerURL(in.ServerURL, s.allowHTTP)
	if fe != nil {
		fields = append(fields, *fe)
	}
	token, fe = ParseToken(in.Token)
	if fe != nil {
		fields = append(fields, *fe)
	}
	if fe := ValidateEndUserID(in.EndUserID); fe != nil {
		fields = append(fields, *fe)
	}
	if len(fields) > 0 {
		return "", "", &ValidationError{Fields: fields}
	}
	return serverURL, token, nil
}

// applyToken makes c an active connection holding token, as just proven.
func (s *Service) applyToken(c *Connection, token string, ident Identity, now time.Time) error {
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

// List pages through connections newest first. Errors: ErrBadCursor,
// ErrUnavailable.
func (s *Service) List(ctx context.Context, q ListQuery) (Page, error) {
	limit := q.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	f := ListFilter{EndUserID: q.EndUserID, Status: q.Status, Limit: limit + 1}
	if q.Cursor != "" {
		pos, err := decodeCursor(q.Cursor)
		if err != nil {
			return Page{}, err
		}
		f.After = &pos
	}
	cs, err := s.store.List(ctx, f)
	if err != nil {
		return Page{}, err
	}
	p := Page{Connections: cs}
	if len(cs) > limit {
		p.Connections = cs[:limit]
		last := cs[limit-1]
		p.NextCursor = encodeCursor(Position{CreatedAt: last.CreatedAt, ID: last.ID})
	}
	return p, nil
}

func encodeCursor(p Position) string {
	raw := strconv.FormatInt(p.CreatedAt.UnixMicro(), 10) + "." + p.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeCursor(s string) (Position, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Position{}, ErrBadCursor
	}
	micros, id, ok := strings.Cut(string(raw), ".")
	if !ok || id == "" || !strings.HasPrefix(id, "conn_") {
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
// raced a revoke or a reconnect records nothing and returns what is stored.
// Errors: ErrNotFound, ErrRevoked, ErrUnavailable.
func (s *Service) Verify(ctx context.Context, id string) (Connection, error) {
	c, token, err := s.liveToken(ctx, id)
	if err != nil {
		return Connection{}, err
	}
	ident, verr := s.verifier.Verify(ctx, c.ServerURL, token)
	now := Truncate(s.now())
	upd := c
	upd.UpdatedAt = now
	var ue *UpstreamError
	switch {
	case verr == nil:
		upd.Status = StatusActive
		upd.MattermostUser = ident.User
		upd.ServerVersion = ident.ServerVersion
		upd.LastVerifiedAt = &now
		upd.LastError = nil
	case errors.As(verr, &ue):
		upd.LastError = &LastError{Code: ue.Code, Message: ue.Message, At: now}
		if ue.TokenRejected() {
			upd.Status = StatusInvalid
		}
	default:
		return Connection{}, verr
	}
	err = s.store.Update(ctx, upd, c.Generation)
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
	if err != nil {
		return Connection{}, err
	}
	return upd, nil
}

// Credentials opens the stored token for the app's backend.
// Errors: ErrNotFound, ErrRevoked, ErrUnavailable.
func (s *Service) Credentials(ctx context.Context, id string) (Credentials, error) {
	c, token, err := s.liveToken(ctx, id)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{ServerURL: c.ServerURL, Token: token}, nil
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

// Revoke erases a connection's token and marks it revoked. Revoking again
// changes nothing. Errors: ErrNotFound, ErrUnavailable.
func (s *Service) Revoke(ctx context.Context, id string) (Connection, error) {
	for range maxAttempts {
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
		err = s.store.Update(ctx, upd, c.Generation)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return Connection{}, err
		}
		return upd, nil
	}
	return Connection{}, fmt.Errorf("revoke: gave up after %d races: %w", maxAttempts, ErrConflict)
}

// Ready tells whether the store answers.
func (s *Service) Ready(ctx context.Context) error { return s.store.Ping(ctx) }

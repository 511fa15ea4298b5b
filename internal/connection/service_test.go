package connection_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/store"
)

const tok = "abcdefghijkmnopqrstuvwxyza"
const tok2 = "bcdefghijkmnopqrstuvwxyzay"

// fakeVerifier answers with its function field.
type fakeVerifier struct {
	verify func(ctx context.Context, serverURL, token string) (connection.Identity, error)
	calls  int
}

var _ connection.Verifier = (*fakeVerifier)(nil)

func (f *fakeVerifier) Verify(ctx context.Context, serverURL, token string) (connection.Identity, error) {
	f.calls++
	return f.verify(ctx, serverURL, token)
}

func accept(context.Context, string, string) (connection.Identity, error) {
	return connection.Identity{User: connection.MattermostUser{ID: "u1", Username: "alice"}, ServerVersion: "11.4.0"}, nil
}

func newService(t *testing.T, v connection.Verifier) (*connection.Service, *store.Store) {
	t.Helper()
	st, sealer := openStore(t)
	return connection.NewService(st, v, sealer), st
}

// A verify whose upstream answer arrives after a revoke must not revive the
// connection: the conditional update sees the newer generation.
func TestVerifyRacingRevokeDoesNotRevive(t *testing.T) {
	ctx := context.Background()
	v := &fakeVerifier{verify: accept}
	svc, _ := newService(t, v)
	c, _, err := svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	v.verify = func(ctx context.Context, s, tk string) (connection.Identity, error) {
		if _, err := svc.Revoke(ctx, c.ID, false); err != nil { // lands while the check is in flight
			t.Fatal(err)
		}
		return accept(ctx, s, tk)
	}
	if _, err := svc.Verify(ctx, c.ID); !errors.Is(err, connection.ErrRevoked) {
		t.Fatalf("Verify racing revoke: err = %v, want ErrRevoked", err)
	}
	got, _ := svc.Get(ctx, c.ID)
	if got.Status != connection.StatusRevoked || got.SealedToken != nil {
		t.Fatalf("after race: status %s, token kept %v", got.Status, got.SealedToken != nil)
	}
}

// A verify that finds the old token rejected must not mark the newer token,
// put in by a reconnect meanwhile, invalid.
func TestVerifyRacingReconnectKeepsNewToken(t *testing.T) {
	ctx := context.Background()
	v := &fakeVerifier{verify: accept}
	svc, _ := newService(t, v)
	c, _, err := svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	v.verify = func(ctx context.Context, s, tk string) (connection.Identity, error) {
		v.verify = accept
		if _, created, err := svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tok2}); err != nil || created {
			t.Fatalf("reconnect: created=%v err=%v", created, err)
		}
		return connection.Identity{}, &connection.UpstreamError{Code: connection.CodeTokenRejected, Message: "no"}
	}
	got, err := svc.Verify(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != connection.StatusActive || got.TokenHint != tok2[22:] || got.LastError != nil {
		t.Fatalf("after race: %+v; want active with the new token", got)
	}
	cred, _ := svc.Credentials(ctx, c.ID)
	if cred.Token != tok2 {
		t.Fatal("credentials lost the new token")
	}
}

func TestConnectValidatesBeforeCallingUpstream(t *testing.T) {
	v := &fakeVerifier{verify: accept}
	svc, _ := newService(t, v)
	_, _, err := svc.Connect(context.Background(), connection.ConnectInput{ServerURL: "ftp://x", Token: "Bearer x", EndUserID: new(string)})
	var ve *connection.ValidationError
	if !errors.As(err, &ve) || len(ve.Fields) != 3 {
		t.Fatalf("err = %v, want 3 field problems", err)
	}
	if v.calls != 0 {
		t.Fatal("invalid input reached the verifier")
	}
}

func TestVerifyUsesUpstreamTimeoutError(t *testing.T) {
	ctx := context.Background()
	v := &fakeVerifier{verify: accept}
	svc, _ := newService(t, v)
	c, _, _ := svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tok})
	v.verify = func(context.Context, string, string) (connection.Identity, error) {
		return connection.Identity{}, &connection.UpstreamError{Code: connection.CodeUpstreamTimeout, Message: "slow", RetryAfter: time.Second}
	}
	got, err := svc.Verify(ctx, c.ID)
	if err != nil || got.Status != connection.StatusActive || got.LastError == nil || got.LastError.Code != connection.CodeUpstreamTimeout {
		t.Fatalf("Verify with a timeout = %+v, %v; want active with last_error upstream_timeout", got, err)
	}
}

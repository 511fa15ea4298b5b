package connection_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
)

// Revoking reaches Mattermost as captures 11, 14 and 18a show it: the
// token's id is learned from its session at connect time, and the token
// revokes itself; a plain user may not; a token that was never proven to
// be this one is not revoked at all.
func TestRevokeReachesMattermost(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// setup runs on the fake before connecting with tok (as alice, or
		// bob who lacks the revoke role when asBob).
		setup       func(mm *mattermosttest.Server)
		asBob       bool
		upstream    bool
		want        connection.RevocationStatus
		wantCalls   int64
		stillWorks  bool
		wantMessage string
	}{
		{name: "revoked", upstream: true, want: connection.RevocationRevoked, wantCalls: 1},
		{name: "not permitted", asBob: true, upstream: true, want: connection.RevocationNotPermitted, wantCalls: 1,
			stillWorks: true, wantMessage: "Profile > Security"},
		{name: "ambiguous sessions", upstream: true, want: connection.RevocationTokenUnknown, wantCalls: 0, stillWorks: true,
			wantMessage: "Profile > Security",
			setup: func(mm *mattermosttest.Server) {
				// Both of alice's tokens were used before, in other seconds:
				// nothing shows which session is this token's.
				mm.AddToken(tok2, alice)
				mm.UseToken(tok, time.Now().Add(-time.Hour))
				mm.UseToken(tok2, time.Now().Add(-2*time.Hour))
			}},
		{name: "caller asked for a local revoke", upstream: false, want: connection.RevocationSkipped, wantCalls: 0, stillWorks: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mm := mattermosttest.NewServer(t)
			user := alice
			if tc.asBob {
				user = bob
			}
			mm.AddToken(tok, user)
			if tc.setup != nil {
				tc.setup(mm)
			}
			w := newWorld(t, worldOptions{mm: mm})
			c := w.connect(t, tok, "u1")
			if _, err := w.svc.Revoke(ctx, c.ID, tc.upstream); err != nil {
				t.Fatal(err)
			}
			got := w.get(t, c.ID)
			if got.Status != connection.StatusRevoked || got.SealedToken != nil {
				t.Fatalf("local revoke did not happen: %+v", got)
			}
			r := got.UpstreamRevocation
			if r == nil || r.Status != tc.want {
				t.Fatalf("upstream_revocation = %+v, want %s", r, tc.want)
			}
			if !strings.Contains(r.Message, tc.wantMessage) {
				t.Errorf("message %q does not say %q", r.Message, tc.wantMessage)
			}
			if got := mm.Revokes(); got != tc.wantCalls {
				t.Errorf("revoke calls at Mattermost = %d, want %d", got, tc.wantCalls)
			}
			if got := mm.HasToken(tok); got != tc.stillWorks {
				t.Errorf("token works in Mattermost after revoke = %v, want %v", got, tc.stillWorks)
			}
			if due, _ := w.store.ClaimRevocations(ctx, w.clock.Now().Add(100*time.Hour), 10, w.clock.Now()); len(due) != 0 {
				t.Errorf("a settled revoke left %d pending revocations", len(due))
			}
		})
	}
}

// A Mattermost that cannot be reached at revoke time is retried from a
// separate table until it answers; after 72 h the token is erased unrevoked.
func TestRevokePendingIsRetried(t *testing.T) {
	ctx := context.Background()
	down := func(rw http.ResponseWriter, r *http.Request) {
		rw.WriteHeader(http.StatusBadGateway)
		io.WriteString(rw, "<html>bad gateway</html>")
	}
	t.Run("until it answers", func(t *testing.T) {
		w := newWorld(t, worldOptions{})
		c := w.connect(t, tok, "u1")
		w.mm.Override(down)
		if _, err := w.svc.Revoke(ctx, c.ID, true); err != nil {
			t.Fatal(err)
		}
		if got := w.get(t, c.ID); got.UpstreamRevocation.Status != connection.RevocationPending || got.SealedToken != nil {
			t.Fatalf("after an unreachable revoke: %+v; want pending with the connection's token erased", got.UpstreamRevocation)
		}
		w.clock.Advance(2 * time.Minute)
		if n, err := w.svc.RetryRevocations(ctx); n != 1 || err != nil {
			t.Fatalf("retry round: %d, %v; want 1 tried", n, err)
		}
		if got := w.get(t, c.ID); got.UpstreamRevocation.Status != connection.RevocationPending {
			t.Fatalf("still down: %s; want pending", got.UpstreamRevocation.Status)
		}
		if n, _ := w.svc.RetryRevocations(ctx); n != 0 {
			t.Fatalf("a retry ran again before its backoff: %d", n)
		}
		w.mm.Override(nil)
		w.clock.Advance(2 * time.Minute)
		if n, err := w.svc.RetryRevocations(ctx); n != 1 || err != nil {
			t.Fatalf("retry round: %d, %v; want 1 tried", n, err)
		}
		if got := w.get(t, c.ID); got.UpstreamRevocation.Status != connection.RevocationRevoked || w.mm.HasToken(tok) {
			t.Fatalf("after Mattermost came back: %s, token works %v; want revoked", got.UpstreamRevocation.Status, w.mm.HasToken(tok))
		}
	})
	t.Run("gives up after 72 hours", func(t *testing.T) {
		w := newWorld(t, worldOptions{})
		c := w.connect(t, tok, "u1")
		w.mm.Override(down)
		if _, err := w.svc.Revoke(ctx, c.ID, true); err != nil {
			t.Fatal(err)
		}
		w.clock.Advance(73 * time.Hour)
		if _, err := w.svc.RetryRevocations(ctx); err != nil {
			t.Fatal(err)
		}
		if got := w.get(t, c.ID); got.UpstreamRevocation.Status != connection.RevocationFailed {
			t.Fatalf("after 73 h down: %s; want failed", got.UpstreamRevocation.Status)
		}
		w.clock.Advance(time.Hour)
		if n, _ := w.svc.RetryRevocations(ctx); n != 0 {
			t.Fatalf("a failed revocation is still retried (%d)", n)
		}
	})
}

// Revoked connections are deleted after the retention, once their events
// are settled, with a connection.deleted event; younger ones stay.
func TestRetentionDeletesOldRevokedConnections(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, worldOptions{retention: 720 * time.Hour})
	old := w.connect(t, tok, "u1")
	young := w.connect(t, tok2, "u2")
	live := w.connect(t, tok, "u3")
	if _, err := w.svc.Revoke(ctx, old.ID, false); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(10 * 24 * time.Hour)
	if _, err := w.svc.Revoke(ctx, young.ID, false); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(25 * 24 * time.Hour) // old: 35 days revoked; young: 25

	// Events still to deliver hold the row back.
	if n, err := w.svc.PurgeRevoked(ctx); n != 0 || err != nil {
		t.Fatalf("purged %d (%v) while their events were undelivered; want 0", n, err)
	}
	settleAll(t, w)
	if n, err := w.svc.PurgeRevoked(ctx); n != 1 || err != nil {
		t.Fatalf("purged %d, %v; want 1", n, err)
	}
	if _, err := w.svc.Get(ctx, old.ID); err != connection.ErrNotFound {
		t.Fatalf("old revoked connection: err %v, want ErrNotFound", err)
	}
	for _, id := range []string{young.ID, live.ID} {
		w.get(t, id)
	}
	if got, want := w.eventTypes(t, old.ID), "connection.created,connection.revoked,connection.deleted"; strings.Join(got, ",") != want {
		t.Fatalf("events of the deleted connection = %v, want %s", got, want)
	}
}

// settleAll marks every pending event delivered, as a receiver would.
func settleAll(t *testing.T, w *world) {
	t.Helper()
	ctx := context.Background()
	lease := w.clock.Now().Add(time.Minute)
	ds, err := w.store.ClaimDeliveries(ctx, w.clock.Now(), 1000, lease)
	if err != nil {
		t.Fatal(err)
	}
	for len(ds) > 0 {
		for _, d := range ds {
			if err := w.store.RecordAttempt(ctx, d.Event.ID, lease, webhookDelivered(w.clock.Now())); err != nil {
				t.Fatal(err)
			}
		}
		if ds, err = w.store.ClaimDeliveries(ctx, w.clock.Now(), 1000, lease); err != nil {
			t.Fatal(err)
		}
	}
}

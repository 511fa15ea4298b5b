package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/audit"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// Outbox is a store of connections that also keeps their events and the
// audit trail.
type Outbox interface {
	connection.Store
	webhook.Store
	audit.Store
}

// RunOutbox runs the contract of what changes record beside a connection
// (events, pending revocations), the re-check claims and the delivery
// queue, against stores made by newStore.
func RunOutbox(t *testing.T, newStore func(t *testing.T) Outbox) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Outbox)
	}{
		{"EventsNumberedPerConnection", testEventsNumbered},
		{"ConflictWritesNoEvent", testConflictWritesNoEvent},
		{"ChangeWithoutEventsIsRecorded", testChangeWithoutEvents},
		{"AuditTrail", testAuditTrail},
		{"StatusChangeKeepsToken", testStatusChangeKeepsToken},
		{"OlderCheckRefused", testOlderCheckRefused},
		{"ClaimDueOnce", testClaimDueOnce},
		{"DeliveryQueueOrder", testDeliveryQueueOrder},
		{"PruneSettled", testPruneSettled},
		{"RevocationsAndPurge", testRevocationsAndPurge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func event(typ connection.EventType, c connection.Connection) connection.Event {
	return connection.Event{ID: connection.NewEventID(), Type: typ, At: c.UpdatedAt, Connection: connection.Snapshot(c)}
}

// events lists a connection's events by sequence.
func events(t *testing.T, s Outbox, connID string) []webhook.Delivery {
	t.Helper()
	all, err := s.ListDeliveries(context.Background(), webhook.ListFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []webhook.Delivery
	for _, d := range all {
		if d.ConnectionID == connID {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Event.Sequence < out[j].Event.Sequence })
	return out
}

func testEventsNumbered(t *testing.T, s Outbox) {
	ctx := context.Background()
	c := sample(1, str("u"))
	if err := s.Create(ctx, c, connection.Change{Events: []connection.Event{event(connection.EventCreated, c)}}); err != nil {
		t.Fatal(err)
	}
	quiet := c
	quiet.UpdatedAt = c.UpdatedAt.Add(time.Second)
	if err := s.Update(ctx, quiet, 1, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	inv := quiet
	inv.Status = connection.StatusInvalid
	// Two events in one change: they take consecutive numbers.
	if err := s.Update(ctx, inv, 1, connection.Change{Events: []connection.Event{event(connection.EventInvalid, inv),
		event(connection.EventRecovered, inv)}}); err != nil {
		t.Fatal(err)
	}
	rev := inv
	rev.Status, rev.SealedToken, rev.Generation = connection.StatusRevoked, nil, 2
	if err := s.Update(ctx, rev, 1, connection.Change{Events: []connection.Event{event(connection.EventRevoked, rev)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, rev, connection.Change{Events: []connection.Event{event(connection.EventDeleted, rev)}}); err != nil {
		t.Fatal(err)
	}
	got := events(t, s, c.ID)
	want := []connection.EventType{connection.EventCreated, connection.EventInvalid, connection.EventRecovered, connection.EventRevoked,
		connection.EventDeleted}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i, d := range got {
		if d.Event.Type != want[i] || d.Event.Sequence != int64(i+1) || d.Status != webhook.StatusPending {
			t.Errorf("event %d: %s #%d %s; want %s #%d pending", i, d.Event.Type, d.Event.Sequence, d.Status, want[i], i+1)
		}
		if d.Event.Connection.ID != c.ID || d.Event.Connection.SealedToken != nil {
			t.Errorf("event %d snapshot: id %s, token kept %v", i, d.Event.Connection.ID, d.Event.Connection.SealedToken != nil)
		}
	}
	if got[1].Event.Connection.Status != connection.StatusInvalid {
		t.Errorf("the invalid event's snapshot has status %s", got[1].Event.Connection.Status)
	}
	if _, err := s.Get(ctx, c.ID); !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
}

func testConflictWritesNoEvent(t *testing.T, s Outbox) {
	ctx := context.Background()
	c := sample(1, nil)
	mustCreate(t, s, c)
	stale := c
	stale.Status = connection.StatusInvalid
	err := s.Update(ctx, stale, 7, connection.Change{Events: []connection.Event{event(connection.EventInvalid, stale)}})
	if !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	if got := events(t, s, c.ID); len(got) != 0 {
		t.Fatalf("a refused change left %d events", len(got))
	}
	if err := s.Delete(ctx, c, connection.Change{Events: []connection.Event{event(connection.EventDeleted, c)}}); !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("Delete of a live connection: %v, want ErrConflict", err)
	}
	if got := events(t, s, c.ID); len(got) != 0 {
		t.Fatalf("a refused delete left %d events", len(got))
	}
}

func testStatusChangeKeepsToken(t *testing.T, s Outbox) {
	ctx := context.Background()
	c := sample(1, nil)
	mustCreate(t, s, c)
	upd := c
	upd.Status = connection.StatusInvalid
	upd.SealedToken = []byte("mmc1.0000.an-old-ciphertext")
	if err := s.Update(ctx, upd, c.Generation, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, c.ID)
	if string(got.SealedToken) != string(c.SealedToken) || got.Status != connection.StatusInvalid {
		t.Fatalf("a status change wrote the token column (%q) or lost the status (%s)", got.SealedToken, got.Status)
	}
}

func testOlderCheckRefused(t *testing.T, s Outbox) {
	ctx := context.Background()
	c := sample(1, nil)
	newer := base.Add(time.Hour)
	c.LastCheckedAt = &newer
	mustCreate(t, s, c)
	older := base.Add(time.Minute)
	upd := c
	upd.LastCheckedAt = &older
	upd.Status = connection.StatusInvalid
	if err := s.Update(ctx, upd, c.Generation, connection.Change{}); !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("a check older than the stored one: %v, want ErrConflict", err)
	}
	same := c
	same.ServerVersion = "11.5.0"
	if err := s.Update(ctx, same, c.Generation, connection.Change{}); err != nil {
		t.Fatalf("a write with the stored last_checked_at: %v", err)
	}
}

func testClaimDueOnce(t *testing.T, s Outbox) {
	ctx := context.Background()
	const n = 12
	for i := range n {
		c := sample(i, str("u"))
		c.MattermostUser.ID = c.ID
		c.NextCheckAt = base.Add(time.Duration(i) * time.Minute)
		mustCreate(t, s, c)
	}
	future := sample(100, str("future"))
	future.NextCheckAt = base.Add(time.Hour)
	mustCreate(t, s, future)
	revoked := sample(101, str("revoked"))
	revoked.Status, revoked.SealedToken = connection.StatusRevoked, nil
	mustCreate(t, s, revoked)

	now := base.Add(30 * time.Minute)
	next := func() time.Time { return base.Add(2 * time.Hour) }
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				cs, err := s.ClaimDue(ctx, now, 5, next)
				if err != nil {
					t.Error(err)
					return
				}
				if len(cs) == 0 {
					return
				}
				mu.Lock()
				for _, c := range cs {
					seen[c.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("claimed %d distinct connections, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s claimed %d times", id, k)
		}
	}
	if cs, _ := s.ClaimDue(ctx, now, 100, next); len(cs) != 0 {
		t.Fatalf("claimed again in the same round: %d", len(cs))
	}
	first := sample(0, str("u"))
	got, _ := s.Get(ctx, first.ID)
	if !got.NextCheckAt.Equal(next()) {
		t.Fatalf("a claim set next_check_at %v, want %v", got.NextCheckAt, next())
	}
}

func testDeliveryQueueOrder(t *testing.T, s Outbox) {
	ctx := context.Background()
	c := sample(1, nil)
	e1, e2 := event(connection.EventCreated, c), event(connection.EventInvalid, c)
	if err := s.Create(ctx, c, connection.Change{Events: []connection.Event{e1, e2}}); err != nil {
		t.Fatal(err)
	}
	other := sample(2, str("x"))
	if err := s.Create(ctx, other, connection.Change{Events: []connection.Event{event(connection.EventCreated, other)}}); err != nil {
		t.Fatal(err)
	}
	now := base.Add(time.Hour)
	lease := now.Add(time.Minute)
	ds, err := s.ClaimDeliveries(ctx, now, 10, lease)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("claimed %d deliveries, want 2 (each connection's first)", len(ds))
	}
	for _, d := range ds {
		if d.Event.ID == e2.ID {
			t.Fatal("the second event of a connection was claimed while the first was pending")
		}
	}
	if again, _ := s.ClaimDeliveries(ctx, now, 10, lease); len(again) != 0 {
		t.Fatalf("claimed leased deliveries again: %d", len(again))
	}
	if err := s.RecordAttempt(ctx, e1.ID, lease, webhook.Outcome{At: now, ResponseStatus: 204, Status: webhook.StatusDelivered, NextAttemptAt: now, Deadline: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAttempt(ctx, e1.ID, lease, webhook.Outcome{At: now, Status: webhook.StatusFailed}); !errors.Is(err, webhook.ErrNotFound) {
		t.Fatalf("recording on a settled delivery: %v, want ErrNotFound", err)
	}
	next, _ := s.ClaimDeliveries(ctx, now, 10, lease)
	if len(next) != 1 || next[0].Event.ID != e2.ID || next[0].Event.Sequence != 2 {
		t.Fatalf("after the first was delivered, claimed %+v; want the second", next)
	}
}

// Pruning deletes the deliveries settled (delivered or failed) before the
// cutoff, and never a pending one, however old.
func testPruneSettled(t *testing.T, s Outbox) {
	ctx := context.Background()
	now := base.Add(time.Hour)
	lease := now.Add(time.Minute)
	ids := make([]string, 5)
	for i := range ids {
		c := sample(i+1, str(fmt.Sprint("prune-", i)))
		e := event(connection.EventCreated, c)
		if err := s.Create(ctx, c, connection.Change{Events: []connection.Event{e}}); err != nil {
			t.Fatal(err)
		}
		ids[i] = e.ID
	}
	if ds, err := s.ClaimDeliveries(ctx, now, 10, lease); err != nil || len(ds) != len(ids) {
		t.Fatalf("claimed %d, %v; want %d", len(ds), err, len(ids))
	}
	cutoff := now.Add(time.Minute)
	// 0 delivered and 1 failed before the cutoff; 2 delivered and 3 failed
	// after it; 4 still pending.
	for i, o := range []webhook.Outcome{
		{At: now, ResponseStatus: 204, Status: webhook.StatusDelivered},
		{At: now, ResponseStatus: 500, Status: webhook.StatusFailed},
		{At: cutoff.Add(time.Second), ResponseStatus: 204, Status: webhook.StatusDelivered},
		{At: cutoff.Add(time.Second), ResponseStatus: 500, Status: webhook.StatusFailed},
	} {
		o.NextAttemptAt, o.Deadline = o.At, o.At
		if err := s.RecordAttempt(ctx, ids[i], lease, o); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PruneSettled(ctx, cutoff); err != nil || n != 2 {
		t.Fatalf("PruneSettled = %d, %v; want the 2 settled before the cutoff", n, err)
	}
	for i, id := range ids {
		_, err := s.GetDelivery(ctx, id)
		if gone := errors.Is(err, webhook.ErrNotFound); gone != (i < 2) {
			t.Errorf("delivery %d: %v; want it gone only when it settled before the cutoff", i, err)
		}
	}
	if n, err := s.PruneSettled(ctx, now.Add(time.Hour)); err != nil || n != 2 {
		t.Fatalf("PruneSettled later = %d, %v; want the 2 settled since, and not the pending one", n, err)
	}
	if _, err := s.GetDelivery(ctx, ids[4]); err != nil {
		t.Fatalf("the pending delivery: %v", err)
	}
}

func testRevocationsAndPurge(t *testing.T, s Outbox) {
	ctx := context.Background()
	c := sample(1, nil)
	mustCreate(t, s, c)
	at := base.Add(time.Hour)
	rev := c
	rev.Status, rev.SealedToken, rev.Generation, rev.RevokedAt = connection.StatusRevoked, nil, 2, &at
	rev.UpstreamRevocation = &connection.UpstreamRevocation{Status: connection.RevocationPending, Message: "trying", At: at}
	p := connection.PendingRevocation{ConnectionID: c.ID, ServerURL: c.ServerURL, TokenID: "tokenid", SealedToken: c.SealedToken,
		CreatedAt: at, NextAttemptAt: at.Add(time.Minute)}
	if err := s.Update(ctx, rev, 1, connection.Change{Revocation: &p}); err != nil {
		t.Fatal(err)
	}
	if cs, _ := s.Purgeable(ctx, at.Add(time.Hour), 10); len(cs) != 0 {
		t.Fatal("a connection with a pending revocation is purgeable")
	}
	if ps, _ := s.ClaimRevocations(ctx, at, 10, at.Add(time.Hour)); len(ps) != 0 {
		t.Fatal("a revocation was claimed before it was due")
	}
	ps, err := s.ClaimRevocations(ctx, at.Add(time.Minute), 10, at.Add(time.Hour))
	if err != nil || len(ps) != 1 || string(ps[0].SealedToken) != string(c.SealedToken) || ps[0].TokenID != "tokenid" {
		t.Fatalf("ClaimRevocations = %+v, %v", ps, err)
	}
	done := connection.UpstreamRevocation{Status: connection.RevocationRevoked, Message: "ok", At: at.Add(2 * time.Minute)}
	if err := s.SettleRevocation(ctx, c.ID, done, true, 1, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SettleRevocation(ctx, c.ID, done, true, 1, time.Time{}); !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("settling twice: %v, want ErrNotFound", err)
	}
	got, _ := s.Get(ctx, c.ID)
	if got.UpstreamRevocation == nil || *got.UpstreamRevocation != done {
		t.Fatalf("upstream_revocation = %+v, want %+v", got.UpstreamRevocation, done)
	}
	if cs, _ := s.Purgeable(ctx, at, 10); len(cs) != 0 {
		t.Fatal("a connection revoked after the cutoff is purgeable")
	}
	if cs, _ := s.Purgeable(ctx, at.Add(time.Second), 10); len(cs) != 1 || cs[0].ID != c.ID {
		t.Fatalf("Purgeable = %d connections, want the revoked one", len(cs))
	}
}

// A change without events still records what it carries beside the
// connection: its audit row, and the key that sealed its new token. With
// webhooks off no change has events, and a reconnect is such a change.
func testChangeWithoutEvents(t *testing.T, s Outbox) {
	ctx := context.Background()
	c := sample(70, str("quiet"))
	mustCreate(t, s, c)
	upd := c
	upd.Generation, upd.SealedToken = 2, []byte("mmc1.0000000b.resealed")
	upd.UpdatedAt = c.UpdatedAt.Add(time.Second)
	aud := &connection.AuditEvent{ID: connection.AuditIDPrefix + "quiet", At: upd.UpdatedAt, Actor: "test",
		Action: connection.AuditConnectionReconnect, ConnectionID: c.ID}
	if err := s.Update(ctx, upd, 1, connection.Change{SealingKey: "0000000b", Audit: aud}); err != nil {
		t.Fatal(err)
	}
	trail, err := s.ListAuditEvents(ctx, audit.Filter{ConnectionID: c.ID, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != 1 || trail[0].Action != connection.AuditConnectionReconnect {
		t.Errorf("audit trail of the change: %+v, want its one reconnect", trail)
	}
	keys, err := s.SealingKeyIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(keys, "0000000b") {
		t.Errorf("sealing keys %v, want the change's 0000000b among them", keys)
	}
	if got := events(t, s, c.ID); len(got) != 0 {
		t.Errorf("%d events, want none", len(got))
	}
	got, err := s.Get(ctx, c.ID)
	if err != nil || got.Generation != 2 {
		t.Fatalf("after the change: generation %d, %v", got.Generation, err)
	}
}

// The audit trail keeps every event whole, lists them newest first,
// filtered and in keyset pages, and prunes by age.
func testAuditTrail(t *testing.T, s Outbox) {
	ctx := context.Background()
	ev := func(n int, actor, action, conn string) audit.Event {
		return audit.Event{ID: fmt.Sprintf("%s%03d", connection.AuditIDPrefix, n), At: base.Add(time.Duration(n) * time.Minute),
			Actor: actor, Action: action, ConnectionID: conn, ClientIP: "203.0.113.7", RequestID: fmt.Sprint("req-", n), Detail: "active"}
	}
	all := []audit.Event{
		ev(1, "key-a", audit.ConnectionCredential, "conn_1"),
		ev(2, "session:u1", audit.ConnectionVerify, "conn_1"),
		ev(3, "key-a", audit.ConnectionProxy, "conn_2"),
		ev(4, "key-a", audit.ConnectionCredential, "conn_2"),
	}
	for _, e := range all {
		if err := s.AddAuditEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(f audit.Filter) string {
		t.Helper()
		got, err := s.ListAuditEvents(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range got {
			out = append(out, e.ID[len(e.ID)-3:])
		}
		return fmt.Sprint(out)
	}
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want string
	}{
		{"all, newest first", audit.Filter{Limit: 10}, "[004 003 002 001]"},
		{"one connection", audit.Filter{ConnectionID: "conn_1", Limit: 10}, "[002 001]"},
		{"one actor and action", audit.Filter{Actor: "key-a", Action: audit.ConnectionCredential, Limit: 10}, "[004 001]"},
		{"since", audit.Filter{Since: &all[2].At, Limit: 10}, "[004 003]"},
		{"a page", audit.Filter{Limit: 2}, "[004 003]"},
		{"the page after it", audit.Filter{Limit: 2, After: &connection.Position{CreatedAt: all[2].At, ID: all[2].ID}}, "[002 001]"},
	} {
		if got := ids(tc.f); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	got, err := s.ListAuditEvents(ctx, audit.Filter{ConnectionID: "conn_2", Action: audit.ConnectionProxy, Limit: 1})
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], all[2]) {
		t.Errorf("stored %+v (%v), want %+v", got, err, all[2])
	}
	if n, err := s.PruneAuditEvents(ctx, all[2].At); err != nil || n != 2 {
		t.Fatalf("PruneAuditEvents: %d, %v; want the 2 older events", n, err)
	}
	if got := ids(audit.Filter{Limit: 10}); got != "[004 003]" {
		t.Errorf("after pruning: %s", got)
	}
}

// Package storetest is the contract every connection.Store must meet. Run
// it from each implementation's tests with a constructor that returns a
// fresh, empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// Run runs the whole contract against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) connection.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s connection.Store)
	}{
		{"CreateGetRoundTrip", testRoundTrip},
		{"GetUnknown", testGetUnknown},
		{"LiveKeyUnique", testLiveKeyUnique},
		{"ConcurrentCreatesLeaveOne", testConcurrentCreates},
		{"FindLive", testFindLive},
		{"UpdateConditional", testUpdateConditional},
		{"UpdateClearsFields", testUpdateClears},
		{"ListOrderFiltersAndKeyset", testList},
		{"CapPerEndUser", testCapPerEndUser},
		{"Ping", func(t *testing.T, s connection.Store) {
			if err := s.Ping(context.Background()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

var base = time.Date(2026, 11, 26, 12, 0, 0, 123456000, time.UTC)

func str(s string) *string { return &s }

// sample returns a complete active connection; n makes it distinct.
func sample(n int, endUser *string) connection.Connection {
	at := base.Add(time.Duration(n) * time.Second)
	verified := at.Add(time.Millisecond)
	return connection.Connection{
		ID:             fmt.Sprintf("conn_%026d", n),
		ServerURL:      "https://mm.example.com",
		EndUserID:      endUser,
		Status:         connection.StatusActive,
		MattermostUser: connection.MattermostUser{ID: fmt.Sprintf("user%022d", n), Username: "alice", Email: "alice@example.com"},
		ServerVersion:  "11.4.0",
		TokenHint:      "wxyz",
		SealedToken:    []byte(fmt.Sprintf("mmc1.0000.sealed-%d", n)),
		Generation:     1,
		CreatedAt:      at,
		UpdatedAt:      at,
		LastVerifiedAt: &verified,
	}
}

func mustCreate(t *testing.T, s connection.Store, c connection.Connection) {
	t.Helper()
	if err := s.Create(context.Background(), c, connection.Change{}); err != nil {
		t.Fatalf("Create(%s): %v", c.ID, err)
	}
}

func assertEqual(t *testing.T, got, want connection.Connection) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stored connection differs:\n got  %+v\n want %+v", got, want)
	}
}

func testRoundTrip(t *testing.T, s connection.Store) {
	ctx := context.Background()
	c := sample(1, str("user-1"))
	c.LastError = &connection.LastError{Code: "upstream_error", Message: "it broke", At: base.Add(time.Hour)}
	mustCreate(t, s, c)
	got, err := s.Get(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, got, c)

	bare := sample(2, nil)
	bare.LastVerifiedAt = nil
	mustCreate(t, s, bare)
	got, err = s.Get(ctx, bare.ID)
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, got, bare)
}

func testGetUnknown(t *testing.T, s connection.Store) {
	_, err := s.Get(context.Background(), "conn_nope")
	if !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("Get(unknown) err = %v, want ErrNotFound", err)
	}
}

func testLiveKeyUnique(t *testing.T, s connection.Store) {
	a := sample(1, nil)
	mustCreate(t, s, a)

	dup := sample(2, nil)
	dup.MattermostUser.ID = a.MattermostUser.ID
	if err := s.Create(context.Background(), dup, connection.Change{}); !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("second live connection with nil end user: err = %v, want ErrConflict", err)
	}

	withEndUser := dup
	withEndUser.EndUserID = str("u")
	mustCreate(t, s, withEndUser) // another end user is another connection

	sameEndUser := sample(3, str("u"))
	sameEndUser.MattermostUser.ID = a.MattermostUser.ID
	if err := s.Create(context.Background(), sameEndUser, connection.Change{}); !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("second live connection with same end user: err = %v, want ErrConflict", err)
	}

	// Once revoked, the key is free again.
	revoked := a
	revoked.Status, revoked.SealedToken, revoked.Generation = connection.StatusRevoked, nil, 2
	at := base.Add(time.Hour)
	revoked.RevokedAt = &at
	if err := s.Update(context.Background(), revoked, 1, connection.Change{}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	again := sample(4, nil)
	again.MattermostUser.ID = a.MattermostUser.ID
	mustCreate(t, s, again)
}

// createConcurrently runs n Creates at once, the i-th of nth(i), and
// returns how many succeeded; any failure but refused fails the test.
func createConcurrently(t *testing.T, s connection.Store, n int, refused error, nth func(i int) (connection.Connection, connection.Change)) int {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, ch := nth(i)
			errs[i] = s.Create(context.Background(), c, ch)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, refused):
			t.Errorf("concurrent Create: unexpected error %v", err)
		}
	}
	return ok
}

func testConcurrentCreates(t *testing.T, s connection.Store) {
	const n = 8
	ok := createConcurrently(t, s, n, connection.ErrConflict, func(i int) (connection.Connection, connection.Change) {
		c := sample(10+i, str("racer"))
		c.MattermostUser.ID = "same-user"
		return c, connection.Change{}
	})
	if ok != 1 {
		t.Fatalf("%d of %d concurrent identical creates succeeded, want 1", ok, n)
	}
	got, err := s.List(context.Background(), connection.ListFilter{EndUserID: str("racer"), Limit: 100})
	if err != nil || len(got) != 1 {
		t.Fatalf("List after race: %d rows, err %v; want 1", len(got), err)
	}
}

func testFindLive(t *testing.T, s connection.Store) {
	ctx := context.Background()
	a := sample(1, nil)
	b := sample(2, str("u"))
	b.MattermostUser.ID = a.MattermostUser.ID
	mustCreate(t, s, a)
	mustCreate(t, s, b)
	got, err := s.FindLive(ctx, a.ServerURL, a.MattermostUser.ID, nil)
	if err != nil || got.ID != a.ID {
		t.Fatalf("FindLive(nil end user) = %s, %v; want %s", got.ID, err, a.ID)
	}
	got, err = s.FindLive(ctx, a.ServerURL, a.MattermostUser.ID, str("u"))
	if err != nil || got.ID != b.ID {
		t.Fatalf("FindLive(u) = %s, %v; want %s", got.ID, err, b.ID)
	}
	if _, err := s.FindLive(ctx, "https://other.example.com", a.MattermostUser.ID, nil); !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("FindLive(other server) err = %v, want ErrNotFound", err)
	}
}

func testUpdateConditional(t *testing.T, s connection.Store) {
	ctx := context.Background()
	c := sample(1, nil)
	mustCreate(t, s, c)

	stale := c
	stale.Generation = 3
	if err := s.Update(ctx, stale, 2, connection.Change{}); !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("Update with wrong generation: err = %v, want ErrConflict", err)
	}
	unknown := c
	unknown.ID = "conn_unknown"
	if err := s.Update(ctx, unknown, 1, connection.Change{}); !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("Update unknown: err = %v, want ErrNotFound", err)
	}

	next := c
	next.Generation = 2
	next.TokenHint = "abcd"
	next.SealedToken = []byte("mmc1.0000.new")
	next.UpdatedAt = base.Add(time.Minute)
	if err := s.Update(ctx, next, 1, connection.Change{}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	got, _ := s.Get(ctx, c.ID)
	assertEqual(t, got, next)

	revoked := next
	revoked.Status, revoked.SealedToken, revoked.Generation = connection.StatusRevoked, nil, 3
	if err := s.Update(ctx, revoked, 2, connection.Change{}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	revive := revoked
	revive.Status = connection.StatusActive
	revive.SealedToken = []byte("mmc1.0000.again")
	if err := s.Update(ctx, revive, 3, connection.Change{}); !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("Update of a revoked connection: err = %v, want ErrConflict", err)
	}
	got, _ = s.Get(ctx, c.ID)
	if got.Status != connection.StatusRevoked {
		t.Fatalf("revoked connection revived: status %s", got.Status)
	}
}

func testUpdateClears(t *testing.T, s connection.Store) {
	ctx := context.Background()
	c := sample(1, nil)
	c.LastError = &connection.LastError{Code: "upstream_error", Message: "x", At: base}
	mustCreate(t, s, c)
	upd := c
	upd.LastError = nil
	upd.LastVerifiedAt = nil
	upd.ServerVersion = ""
	if err := s.Update(ctx, upd, 1, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, c.ID)
	assertEqual(t, got, upd)
}

func testList(t *testing.T, s connection.Store) {
	ctx := context.Background()
	var all []connection.Connection
	for i := range 7 {
		end := str("a")
		if i%2 == 1 {
			end = str("b")
		}
		c := sample(i, end)
		c.MattermostUser.ID = fmt.Sprintf("u%d", i)
		if i >= 4 {
			c.CreatedAt = base.Add(time.Hour) // ties on created_at are broken by id
		}
		mustCreate(t, s, c)
		all = append(all, c)
	}
	ids := func(cs []connection.Connection) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.ID
		}
		return out
	}
	want := []string{all[6].ID, all[5].ID, all[4].ID, all[3].ID, all[2].ID, all[1].ID, all[0].ID}
	got, err := s.List(ctx, connection.ListFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(got), want) {
		t.Fatalf("List order = %v, want %v", ids(got), want)
	}

	// Keyset paging in pages of 2 visits every row once, in order.
	var paged []string
	var after *connection.Position
	for {
		page, err := s.List(ctx, connection.ListFilter{Limit: 2, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, ids(page)...)
		last := page[len(page)-1]
		after = &connection.Position{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	if !reflect.DeepEqual(paged, want) {
		t.Fatalf("paged = %v, want %v", paged, want)
	}

	got, _ = s.List(ctx, connection.ListFilter{EndUserID: str("b"), Limit: 100})
	if w := []string{all[5].ID, all[3].ID, all[1].ID}; !reflect.DeepEqual(ids(got), w) {
		t.Fatalf("List(end user b) = %v, want %v", ids(got), w)
	}
	invalid := all[2]
	invalid.Status, invalid.Generation = connection.StatusInvalid, 2
	if err := s.Update(ctx, invalid, 1, connection.Change{}); err != nil {
		t.Fatal(err)
	}
	st := connection.StatusInvalid
	got, _ = s.List(ctx, connection.ListFilter{Status: &st, Limit: 100})
	if w := []string{all[2].ID}; !reflect.DeepEqual(ids(got), w) {
		t.Fatalf("List(status invalid) = %v, want %v", ids(got), w)
	}
}

// Concurrent creates for one end user never get past the cap; revoked
// connections and other end users do not count.
func testCapPerEndUser(t *testing.T, s connection.Store) {
	ctx := context.Background()
	revoked := sample(100, str("capped"))
	revoked.Status, revoked.SealedToken = connection.StatusRevoked, nil
	mustCreate(t, s, revoked)
	mustCreate(t, s, sample(101, str("someone-else")))
	const n, capacity = 10, 3
	capped := func(i int) connection.Connection {
		c := sample(i, str("capped"))
		c.MattermostUser.ID = fmt.Sprintf("user-%d", i)
		return c
	}
	ok := createConcurrently(t, s, n, connection.ErrTooManyConnections, func(i int) (connection.Connection, connection.Change) {
		return capped(i), connection.Change{MaxLivePerEndUser: capacity}
	})
	if ok != capacity {
		t.Fatalf("%d of %d concurrent creates succeeded under a cap of %d", ok, n, capacity)
	}
	// At the cap, a create of a connection that is already live is a
	// conflict (the caller reconnects to it), not a refusal.
	var live []connection.Connection
	for i := range n {
		c := capped(i)
		if _, err := s.Get(ctx, c.ID); err == nil {
			live = append(live, c)
		}
	}
	again := live[0]
	again.ID = "conn_again"
	if err := s.Create(ctx, again, connection.Change{MaxLivePerEndUser: capacity}); !errors.Is(err, connection.ErrConflict) {
		t.Fatalf("a create of a live connection at the cap: %v, want ErrConflict", err)
	}
	// No end user: not capped.
	for i := range capacity + 1 {
		c := sample(200+i, nil)
		c.MattermostUser.ID = fmt.Sprintf("anon-%d", i)
		if err := s.Create(ctx, c, connection.Change{MaxLivePerEndUser: capacity}); err != nil {
			t.Fatalf("a connection without an end user was capped: %v", err)
		}
	}
}

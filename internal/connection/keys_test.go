package connection_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/secret"
)

func sealer(t *testing.T, keys ...byte) *secret.Sealer {
	t.Helper()
	var ks [][]byte
	for _, k := range keys {
		ks = append(ks, bytes.Repeat([]byte{k}, secret.KeySize))
	}
	s, err := secret.NewSealer(ks[0], ks[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tokenN(i int) string { return fmt.Sprintf("tok%022dy", i) }

// Rotate while requests run, then retire the old key: every token opens,
// a reconnect during the rotation keeps its new token, and the start-up
// check passes without the old key.
func TestRotateKeysWhileServing(t *testing.T) {
	ctx := context.Background()
	st, _ := openStore(t)
	users := map[string]string{}
	v := &fakeVerifier{verify: func(_ context.Context, _, token string) (connection.Identity, error) {
		return connection.Identity{User: connection.MattermostUser{ID: users[token], Username: "u"}, ServerVersion: "11.4.0"}, nil
	}}
	const n = 300
	for i := range n {
		users[tokenN(i)] = fmt.Sprintf("user%022d", i)
		users[tokenN(i+n)] = fmt.Sprintf("user%022d", i) // the same account's next token
	}
	old := connection.NewService(st, v, sealer(t, 1))
	ids := make([]string, n)
	for i := range n {
		end := fmt.Sprintf("end-%d", i)
		c, _, err := old.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tokenN(i), EndUserID: &end})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = c.ID
	}
	both := sealer(t, 2, 1) // the new key first: it seals; the old one still opens
	svc := connection.NewService(st, v, both)
	if err := svc.CheckSealingKeys(ctx, both.KeyIDs()); err != nil {
		t.Fatal(err)
	}

	// Requests keep coming while the rotation runs: reconnects with a new
	// token, verifies (status writes), reads.
	var wg sync.WaitGroup
	reconnected := map[int]bool{}
	for i := 0; i < n; i += 7 {
		reconnected[i] = true
	}
	errs := make(chan error, 3*n)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range reconnected {
			end := fmt.Sprintf("end-%d", i)
			if _, created, err := svc.Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tokenN(i + n), EndUserID: &end}); err != nil || created {
				errs <- fmt.Errorf("reconnect %d: created=%v %w", i, created, err)
			}
			if _, err := svc.Verify(ctx, ids[(i+3)%n]); err != nil {
				errs <- fmt.Errorf("verify: %w", err)
			}
		}
	}()
	resealed, use, err := svc.RotateKeys(ctx, 50)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if resealed == 0 || resealed > n {
		t.Fatalf("re-sealed %d values", resealed)
	}
	oldID := sealer(t, 1).Primary()
	if use[oldID] != 0 || use[both.Primary()] != n {
		t.Fatalf("after rotation: %v; want all %d under %s and none under %s", use, n, both.Primary(), oldID)
	}

	// Retire the old key.
	newOnly := sealer(t, 2)
	retired := connection.NewService(st, v, newOnly)
	if err := retired.CheckSealingKeys(ctx, newOnly.KeyIDs()); err != nil {
		t.Fatalf("start-up check without the old key: %v", err)
	}
	for i, id := range ids {
		cred, err := retired.Credentials(ctx, id)
		if err != nil {
			t.Fatalf("credentials of %s after retiring the old key: %v", id, err)
		}
		want := tokenN(i)
		if reconnected[i] {
			want = tokenN(i + n)
		}
		if cred.Token != want {
			t.Fatalf("%s opens to the wrong token (reconnect overwritten?)", id)
		}
	}
}

// A token sealed with a key that is not configured: the start-up check
// names its key id, and at run time it is ErrSealingKeyMissing naming it.
func TestMissingSealingKey(t *testing.T) {
	ctx := context.Background()
	st, _ := openStore(t)
	v := &fakeVerifier{verify: accept}
	c, _, err := connection.NewService(st, v, sealer(t, 1)).Connect(ctx, connection.ConnectInput{ServerURL: "mm.example.com", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	other := sealer(t, 9)
	svc := connection.NewService(st, v, other)
	err = svc.CheckSealingKeys(ctx, other.KeyIDs())
	var mk *connection.MissingKeysError
	lostID := sealer(t, 1).Primary()
	if !errors.As(err, &mk) || len(mk.KeyIDs) != 1 || mk.KeyIDs[0] != lostID || strings.Contains(err.Error(), "\n") {
		t.Fatalf("start-up check = %v; want one line naming %s", err, lostID)
	}
	_, err = svc.Credentials(ctx, c.ID)
	if !errors.Is(err, connection.ErrSealingKeyMissing) || !strings.Contains(err.Error(), lostID) {
		t.Fatalf("credentials = %v; want ErrSealingKeyMissing naming %s", err, lostID)
	}
}

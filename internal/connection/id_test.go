package connection_test

import (
	"regexp"
	"testing"
	"time"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// Both kinds of id have the form the API promises (openapi.yaml's
// patterns), and never repeat.
func TestIDForm(t *testing.T) {
	form := regexp.MustCompile(`^p_[a-z2-7]{26}$`)
	for name, newID := range map[string]func(string) string{"RandomID": connection.RandomID, "OrderedID": connection.OrderedID} {
		seen := map[string]bool{}
		for range 10_000 {
			id := newID("p_")
			if !form.MatchString(id) {
				t.Fatalf("%s = %q, not of the form %s", name, id, form)
			}
			if seen[id] {
				t.Fatalf("%s repeated %q", name, id)
			}
			seen[id] = true
		}
	}
}

// An ordered id minted in a later millisecond sorts after every earlier
// one, as text (which is how the stores' indexes compare them).
func TestOrderedIDSortsByTime(t *testing.T) {
	var prev []string
	for range 50 {
		var batch []string
		for range 20 {
			batch = append(batch, connection.OrderedID("conn_"))
		}
		for _, p := range prev {
			for _, id := range batch {
				if id <= p {
					t.Fatalf("%q, minted later, does not sort after %q", id, p)
				}
			}
		}
		prev = batch
		time.Sleep(2 * time.Millisecond)
	}
}

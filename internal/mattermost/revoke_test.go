package mattermost

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// The token's id is taken only when it is unambiguous: the only token
// session, or the only one made in the same second as this check's answer.
func TestPickTokenID(t *testing.T) {
	first := time.Date(2026, 11, 26, 22, 50, 33, 0, time.UTC)
	const a, b = "5nmuwhgmepntiyzz571pptsadr", "7ytofm5uibnmzdjpnfar1afrbh"
	pat := func(id string, at time.Time) session {
		var s session
		s.CreateAt, s.Props.Type, s.Props.AccessTokenID = at.UnixMilli(), "UserAccessToken", id
		return s
	}
	web := session{CreateAt: first.UnixMilli()}
	tests := []struct {
		name     string
		sessions []session
		firstUse time.Time
		want     string
	}{
		{"the only token session", []session{web, pat(a, first.Add(-time.Hour))}, first, a},
		{"only one made in this second", []session{pat(b, first.Add(-time.Hour)), pat(a, first.Add(559*time.Millisecond))}, first, a},
		{"two made in this second", []session{pat(b, first.Add(10*time.Millisecond)), pat(a, first.Add(559*time.Millisecond))}, first, ""},
		{"none made in this second", []session{pat(b, first.Add(-time.Hour)), pat(a, first.Add(-2*time.Hour))}, first, ""},
		{"server sent no Date", []session{pat(b, first), pat(a, first)}, time.Time{}, ""},
		{"no token session", []session{web}, first, ""},
		{"an id that is not Mattermost's", []session{pat("../../admin", first)}, first, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := pickTokenID(tc.sessions, tc.firstUse); got != tc.want {
				t.Fatalf("pickTokenID = %q, want %q", got, tc.want)
			}
		})
	}
}

// A users/me answer outside Mattermost's own bounds is not Mattermost's.
func TestClassifyBoundsUserFields(t *testing.T) {
	h := http.Header{"X-Version-Id": {"11.4.0.dev.x.false"}}
	for _, tc := range []struct {
		name string
		body string
		ok   bool
	}{
		{"a person", `{"id":"b95oboh88frobdioocwwdoqhdc","username":"alice","email":"alice@example.com"}`, true},
		{"a bot", `{"id":"1db9ackk8t8t8f14ai8pes6n3w","username":"capture-bot","email":"capture-bot@localhost","is_bot":true}`, true},
		{"username of 65", `{"id":"b95oboh88frobdioocwwdoqhdc","username":"` + strings.Repeat("a", 65) + `","email":"a@example.com"}`, false},
		{"email of 255", `{"id":"b95oboh88frobdioocwwdoqhdc","username":"alice","email":"` + strings.Repeat("a", 243) + `@example.com"}`, false},
		{"id of 27", `{"id":"b95oboh88frobdioocwwdoqhdcx","username":"alice","email":"a@example.com"}`, false},
	} {
		ident, err := Classify("https://mm.example.com", 200, h, []byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if tc.name == "a bot" && !ident.User.IsBot {
			t.Errorf("a bot's identity has IsBot false")
		}
	}
}

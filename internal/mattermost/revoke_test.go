package mattermost

import (
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

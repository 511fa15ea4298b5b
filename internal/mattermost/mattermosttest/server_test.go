package mattermosttest

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"
)

// The fake's answers that name the caller are the captures with the
// caller's values put in, and nothing else changed.
func TestAnswersAreTheCaptures(t *testing.T) {
	s := NewServer(t)
	u := User{ID: "u1234567890123456789012345", Username: `ann "the" admin`, Email: "ann@example.com"}
	s.AddToken("tok", u)
	get := func(path string) (http.Header, any) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.URL+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%s: %v in %s", path, err, raw)
		}
		return resp.Header, v
	}
	captured := func(name string) any {
		var v any
		if err := json.Unmarshal(LoadCapture(name).Body, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	h, me := get("/api/v4/users/me")
	want := captured("05-users-me-valid-bearer").(map[string]any)
	want["id"], want["username"], want["email"] = u.ID, u.Username, u.Email
	if !reflect.DeepEqual(me, want) {
		t.Errorf("users/me = %v\nwant %v", me, want)
	}
	if h.Get("X-Version-Id") != LoadCapture("05-users-me-valid-bearer").Header.Get("X-Version-Id") {
		t.Errorf("X-Version-Id = %q", h.Get("X-Version-Id"))
	}

	_, sessions := get("/api/v4/users/me/sessions")
	caps := captured("11-users-me-sessions-with-pat").([]any)
	pat, web := caps[0].(map[string]any), caps[1].(map[string]any)
	used := s.tokens["tok"].session
	pat["id"], pat["user_id"], pat["create_at"] = TokenIDOf(TokenIDOf("tok")), u.ID, float64(used.UnixMilli())
	pat["props"] = map[string]any{"is_guest": "false", "type": "UserAccessToken", "user_access_token_id": TokenIDOf("tok")}
	web["user_id"] = u.ID
	if wantS := []any{pat, web}; !reflect.DeepEqual(sessions, wantS) {
		t.Errorf("users/me/sessions = %v\nwant %v", sessions, wantS)
	}
	if used.IsZero() || time.Since(used) > time.Minute {
		t.Errorf("the token's session was made at %v, not on its first use", used)
	}
}

package connection

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// fieldCase is one row of the field-rule tables in testdata, which the
// Connect page's checks are held to as well (api/browser_test.go).
type fieldCase struct {
	In        string `json:"in"`
	AllowHTTP bool   `json:"allow_http"`
	Want      string `json:"want"` // "" means rejected
	Code      string `json:"code"` // field code when rejected
	Msg       string `json:"msg"`  // part of the message when rejected
}

func loadCases(t *testing.T, name string) []fieldCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var cs []fieldCase
	if err := json.Unmarshal(raw, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestParseServerURL(t *testing.T) {
	tests := loadCases(t, "server_url_cases.json")
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tc := range tests {
		got, fe := ParseServerURL(tc.In, tc.AllowHTTP)
		if tc.Want != "" {
			if fe != nil || got != tc.Want {
				t.Errorf("ParseServerURL(%q) = %q, %+v; want %q", tc.In, got, fe, tc.Want)
			}
			continue
		}
		if fe == nil {
			t.Errorf("ParseServerURL(%q) = %q, want rejection %s", tc.In, got, tc.Code)
			continue
		}
		if fe.Field != "server_url" || fe.Code != tc.Code || !strings.Contains(fe.Message, tc.Msg) {
			t.Errorf("ParseServerURL(%q) problem = %+v; want code %s with %q in the message", tc.In, fe, tc.Code, tc.Msg)
		}
	}
}

// The length limit holds for the URL written in full as well as for what
// was typed, so every server_url the service answers is accepted back.
// (Not in server_url_cases.json, which the Connect page's port of these
// rules is held to: it does not write URLs out in full, and leaves this
// to the server, whose field error it shows.)
func TestParseServerURLLengthWrittenInFull(t *testing.T) {
	b := func(n int) string { return strings.Repeat("b", n) }
	for _, tc := range []struct {
		name, in string
		full     int // 0: too long written in full
	}{
		{"typed without https://, at the limit in full", "a/" + b(MaxServerURLLength-10), MaxServerURLLength},
		{"typed without https://, over the limit only in full", "a/" + b(MaxServerURLLength-2), 0},
		{"typed with https://, at the limit", "https://a/" + b(MaxServerURLLength-10), MaxServerURLLength},
		{"escapes past the limit", "https://a/" + strings.Repeat("é", 400), 0},
		{"escapes within it", "https://a/" + strings.Repeat("é", 339), 10 + 339*6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, fe := ParseServerURL(tc.in, false)
			if tc.full == 0 {
				if fe == nil || fe.Code != FieldTooLong || !strings.Contains(fe.Message, "written in full") {
					t.Fatalf("ParseServerURL(%d characters) = %d characters, %+v; want too_long written in full", len([]rune(tc.in)), len(got), fe)
				}
				return
			}
			if fe != nil || len(got) != tc.full {
				t.Fatalf("ParseServerURL(%d characters) = %d characters, %+v; want %d", len([]rune(tc.in)), len(got), fe, tc.full)
			}
			if again, fe := ParseServerURL(got, false); fe != nil || again != got {
				t.Fatalf("the URL answered is not accepted back as itself: %+v", fe)
			}
		})
	}
}

func TestParseToken(t *testing.T) {
	for _, tc := range loadCases(t, "token_cases.json") {
		got, fe := ParseToken(tc.In)
		if tc.Want != "" {
			if fe != nil || got != tc.Want {
				t.Errorf("ParseToken(%q) = %q, %+v; want %q", tc.In, got, fe, tc.Want)
			}
			continue
		}
		if fe == nil {
			t.Errorf("ParseToken(%q) accepted, want %s", tc.In, tc.Code)
			continue
		}
		if fe.Field != "token" || fe.Code != tc.Code || !strings.Contains(fe.Message, tc.Msg) {
			t.Errorf("ParseToken(%q) problem = %+v; want %s with %q", tc.In, fe, tc.Code, tc.Msg)
		}
		if len(tc.In) >= 8 && strings.Contains(fe.Message, strings.TrimSpace(tc.In)) {
			t.Errorf("ParseToken message repeats the token: %q", fe.Message)
		}
	}
}

func TestValidateEndUserID(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		in   *string
		code string
	}{
		{nil, ""},
		{s("user-42"), ""},
		{s("ü"), ""},
		{s(strings.Repeat("ü", MaxEndUserIDLength)), ""},
		{s(""), FieldRequired},
		{s(strings.Repeat("a", MaxEndUserIDLength+1)), FieldTooLong},
		{s("a\nb"), FieldInvalidFormat},
		{s("a\x7fb"), FieldInvalidFormat},
		{s("a\xffb"), FieldInvalidFormat},
		{s("alice\u202egnp.exe"), FieldInvalidFormat},
		{s("ali\u200bce"), FieldInvalidFormat},
		{s("a\ufeffb"), FieldInvalidFormat},
	} {
		fe := ValidateEndUserID(tc.in)
		got := ""
		if fe != nil {
			got = fe.Code
		}
		if got != tc.code {
			t.Errorf("ValidateEndUserID(%v) code = %q, want %q", tc.in, got, tc.code)
		}
	}
}

// FuzzParseServerURL: whatever goes in, an accepted URL is already normal
// (parsing it again gives itself) and carries no userinfo, query or fragment.
func FuzzParseServerURL(f *testing.F) {
	for _, s := range []string{"mattermost.example.com", "https://[::1]:8065/a/api/v4", "bücher.example", "http://x:0", "a..b", "https://u@h/?q#f"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, allowHTTP bool) {
		got, fe := ParseServerURL(in, allowHTTP)
		if fe != nil {
			if got != "" || fe.Message == "" {
				t.Fatalf("rejection with value %q or empty message", got)
			}
			return
		}
		again, fe := ParseServerURL(got, allowHTTP)
		if fe != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q (%+v)", in, got, again, fe)
		}
		if !strings.HasPrefix(got, "https://") && !(allowHTTP && strings.HasPrefix(got, "http://")) {
			t.Fatalf("accepted scheme: %q", got)
		}
		u, err := url.Parse(got)
		if err != nil || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(got, "?# ") ||
			strings.HasSuffix(got, "/") || !utf8.ValidString(got) {
			t.Fatalf("accepted URL not normal: %q", got)
		}
	})
}

// FuzzParseToken: an accepted token is exactly Mattermost's id format, and
// a rejection's message is one of the fixed texts (only lengths vary), so
// it can never carry any part of what was pasted.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"abcdefghijkmnopqrstuvwxyza", "Bearer x", " A ", "", "token abc", "a b"} {
		f.Add(s)
	}
	digits := regexp.MustCompile(`[0-9]+`)
	templates := map[string]bool{}
	for _, in := range []string{"", "x", strings.Repeat("a", MaxTokenLength+1), "Bearer abcdefghijkmnopqrstuvwxyza",
		"Token abcdefghijkmnopqrstuvwxyza", "a b", "A", "-"} {
		if _, fe := ParseToken(in); fe != nil {
			templates[digits.ReplaceAllString(fe.Message, "N")] = true
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, fe := ParseToken(in)
		if fe == nil {
			if len(got) != TokenLength || strings.Trim(got, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
				t.Fatalf("accepted %q", got)
			}
			return
		}
		if !templates[digits.ReplaceAllString(fe.Message, "N")] {
			t.Fatalf("message is not a fixed text: %q", fe.Message)
		}
	})
}

package connection

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseServerURL(t *testing.T) {
	tests := []struct {
		in        string
		allowHTTP bool
		want      string // "" means rejected
		code      string // field code when rejected
		msg       string // part of the message when rejected
	}{
		// accepted, normalised
		{in: "mattermost.example.com", want: "https://mattermost.example.com"},
		{in: "  mattermost.example.com  ", want: "https://mattermost.example.com"},
		{in: "MatterMost.Example.COM", want: "https://mattermost.example.com"},
		{in: "HTTPS://mattermost.example.com/", want: "https://mattermost.example.com"},
		{in: "https://mattermost.example.com.", want: "https://mattermost.example.com"},
		{in: "https://mattermost.example.com.:8065/", want: "https://mattermost.example.com:8065"},
		{in: "mattermost.example.com:443", want: "https://mattermost.example.com"},
		{in: "mattermost.example.com:8065", want: "https://mattermost.example.com:8065"},
		{in: "mattermost.example.com:08065", want: "https://mattermost.example.com:8065"},
		{in: "https://example.com/mattermost", want: "https://example.com/mattermost"},
		{in: "https://example.com/mattermost/", want: "https://example.com/mattermost"},
		{in: "https://example.com//a/./b/../mattermost//", want: "https://example.com/a/mattermost"},
		{in: "https://example.com/api/v4", want: "https://example.com"},
		{in: "https://example.com/api/v4/", want: "https://example.com"},
		{in: "https://example.com/api/v4/users/me", want: "https://example.com"},
		{in: "https://example.com/mm/API/V4/users/me", want: "https://example.com/mm"},
		{in: "https://example.com/mm%20chat", want: "https://example.com/mm%20chat"},
		{in: "203.0.113.7", want: "https://203.0.113.7"},
		{in: "203.0.113.7:8065", want: "https://203.0.113.7:8065"},
		{in: "[2001:db8::1]", want: "https://[2001:db8::1]"},
		{in: "https://[2001:DB8:0:0::1]:8443/", want: "https://[2001:db8::1]:8443"},
		{in: "bücher.example", want: "https://xn--bcher-kva.example"},
		{in: "https://BÜCHER.example/", want: "https://xn--bcher-kva.example"},
		{in: "xn--bcher-kva.example", want: "https://xn--bcher-kva.example"},
		{in: "mattermost", want: "https://mattermost"},
		{in: "chat-1.example.com", want: "https://chat-1.example.com"},
		{in: "http://mm.example.com", allowHTTP: true, want: "http://mm.example.com"},
		{in: "http://mm.example.com:80/", allowHTTP: true, want: "http://mm.example.com"},
		{in: "http://mm.example.com:443", allowHTTP: true, want: "http://mm.example.com:443"},
		{in: "https://mm.example.com:80", want: "https://mm.example.com:80"},

		// rejected
		{in: "", code: FieldRequired, msg: "required"},
		{in: "   ", code: FieldRequired, msg: "required"},
		{in: "http://mm.example.com", code: FieldInvalidFormat, msg: "https://"},
		{in: "ftp://mm.example.com", code: FieldInvalidFormat, msg: "https://"},
		{in: "ftp:mm.example.com", code: FieldInvalidFormat, msg: "https://"},
		{in: "javascript:alert(1)", code: FieldInvalidFormat},
		{in: "https://user:pass@mm.example.com", code: FieldInvalidFormat, msg: "user name or password"},
		{in: "https://user@mm.example.com", code: FieldInvalidFormat, msg: "user name"},
		{in: "https://mm.example.com/?a=b", code: FieldInvalidFormat, msg: "query"},
		{in: "https://mm.example.com?", code: FieldInvalidFormat, msg: "query"},
		{in: "https://mm.example.com/#top", code: FieldInvalidFormat, msg: "fragment"},
		{in: "https://mm.example.com:0", code: FieldInvalidFormat, msg: "1 to 65535"},
		{in: "https://mm.example.com:65536", code: FieldInvalidFormat, msg: "65535"},
		{in: "https://mm.example.com:99999999999999999999", code: FieldInvalidFormat, msg: "65535"},
		{in: "https://mm.example.com:abc", code: FieldInvalidFormat, msg: "port"},
		{in: "https://mm.example.com:", code: FieldInvalidFormat, msg: "port"},
		{in: "https://", code: FieldInvalidFormat, msg: "host"},
		{in: "https:///path", code: FieldInvalidFormat, msg: "host"},
		{in: "mm example.com", code: FieldInvalidFormat, msg: "spaces"},
		{in: "mm.example.com\x00", code: FieldInvalidFormat, msg: "control"},
		{in: "mm_example.com", code: FieldInvalidFormat, msg: "not a valid host"},
		{in: "-mm.example.com", code: FieldInvalidFormat},
		{in: "mm-.example.com", code: FieldInvalidFormat},
		{in: "mm..example.com", code: FieldInvalidFormat},
		{in: strings.Repeat("a", 64) + ".example.com", code: FieldInvalidFormat, msg: "63"},
		{in: strings.Repeat(strings.Repeat("a", 60)+".", 5) + "com", code: FieldInvalidFormat, msg: "253"},
		{in: "2001:db8::1", code: FieldInvalidFormat, msg: "brackets"},
		{in: "https://[2001:db8::1%25eth0]", code: FieldInvalidFormat, msg: "IPv6"},
		{in: "https://[203.0.113.7]", code: FieldInvalidFormat, msg: "IPv6"},
		{in: "127.1", code: FieldInvalidFormat, msg: "dotted-decimal"},
		{in: "0x7f.0.0.1", code: FieldInvalidFormat, msg: "dotted-decimal"},
		{in: "2130706433", code: FieldInvalidFormat, msg: "dotted-decimal"},
		{in: "0177.0.0.1", code: FieldInvalidFormat, msg: "dotted-decimal"},
		{in: "256.1.1.1", code: FieldInvalidFormat, msg: "dotted-decimal"},
		{in: "https://mm.example.com/%zz", code: FieldInvalidFormat, msg: "escape"},
		{in: "https://" + strings.Repeat("a", MaxServerURLLength), code: FieldTooLong},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tc := range tests {
		got, fe := ParseServerURL(tc.in, tc.allowHTTP)
		if tc.want != "" {
			if fe != nil || got != tc.want {
				t.Errorf("ParseServerURL(%q) = %q, %+v; want %q", tc.in, got, fe, tc.want)
			}
			continue
		}
		if fe == nil {
			t.Errorf("ParseServerURL(%q) = %q, want rejection %s", tc.in, got, tc.code)
			continue
		}
		if fe.Field != "server_url" || fe.Code != tc.code || !strings.Contains(fe.Message, tc.msg) {
			t.Errorf("ParseServerURL(%q) problem = %+v; want code %s with %q in the message", tc.in, fe, tc.code, tc.msg)
		}
	}
}

func TestParseToken(t *testing.T) {
	const good = "abcdefghijkmnopqrstuvwxyza"
	tests := []struct {
		in   string
		want string
		code string
		msg  string
	}{
		{in: good, want: good},
		{in: "  " + good + "\n", want: good},
		{in: "\t" + good, want: good},
		{in: "0123456789abcdefghijklmnop", want: "0123456789abcdefghijklmnop"},
		{in: "", code: FieldRequired, msg: "required"},
		{in: " \n ", code: FieldRequired, msg: "required"},
		{in: good[:25], code: FieldInvalidFormat, msg: "25 characters long"},
		{in: good + "a", code: FieldInvalidFormat, msg: "27 characters long"},
		{in: "abc", code: FieldInvalidFormat, msg: "exactly 26"},
		{in: strings.ToUpper(good), code: FieldInvalidFormat, msg: "upper-case"},
		{in: "Abcdefghijkmnopqrstuvwxyza", code: FieldInvalidFormat, msg: "upper-case"},
		{in: "abcdefghijkm nopqrstuvwxyz", code: FieldInvalidFormat, msg: "spaces"},
		{in: "abcdefghijkm\nopqrstuvwxyz", code: FieldInvalidFormat, msg: "spaces"},
		{in: "Bearer " + good, code: FieldInvalidFormat, msg: "Bearer"},
		{in: "bearer " + good, code: FieldInvalidFormat, msg: "Bearer"},
		{in: "Token " + good, code: FieldInvalidFormat, msg: "Token"},
		{in: "abcdefghijkmnopqrstuvwxy-a", code: FieldInvalidFormat, msg: "only lower-case"},
		{in: "abcdefghijkmnopqrstuvwxyé", code: FieldInvalidFormat, msg: "only lower-case"},
		{in: strings.Repeat("a", MaxTokenLength+1), code: FieldTooLong},
	}
	for _, tc := range tests {
		got, fe := ParseToken(tc.in)
		if tc.want != "" {
			if fe != nil || got != tc.want {
				t.Errorf("ParseToken(%q) = %q, %+v; want %q", tc.in, got, fe, tc.want)
			}
			continue
		}
		if fe == nil {
			t.Errorf("ParseToken(%q) accepted, want %s", tc.in, tc.code)
			continue
		}
		if fe.Field != "token" || fe.Code != tc.code || !strings.Contains(fe.Message, tc.msg) {
			t.Errorf("ParseToken(%q) problem = %+v; want %s with %q", tc.in, fe, tc.code, tc.msg)
		}
		if len(tc.in) >= 8 && strings.Contains(fe.Message, strings.TrimSpace(tc.in)) {
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

package connection

import (
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits on input fields, shared with the request validation in api.
const (
	MaxServerURLLength = 2048
	MaxTokenLength     = 1024
	MaxEndUserIDLength = 255
	TokenLength        = 26
)

// ParseServerURL turns what a person typed or pasted as their Mattermost
// server address into the one normalised URL mmconnect stores and calls:
// scheme and host in lower case, punycode for international names, no
// default port, no trailing slash and no pasted API path. The FieldError
// says exactly what is wrong in words the person can act on.
func ParseServerURL(raw string, allowHTTP bool) (string, *FieldError) {
	const field = "server_url"
	bad := func(format string, args ...any) (string, *FieldError) {
		return "", &FieldError{Field: field, Code: FieldInvalidFormat, Message: fmt.Sprintf(format, args...)}
	}
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", &FieldError{Field: field, Code: FieldRequired, Message: "server_url is required: the address of your Mattermost server, e.g. mattermost.example.com"}
	}
	if utf8.RuneCountInString(s) > MaxServerURLLength {
		return "", &FieldError{Field: field, Code: FieldTooLong, Message: fmt.Sprintf("server_url must be at most %d characters", MaxServerURLLength)}
	}
	if !utf8.ValidString(s) {
		return bad("server_url must be valid UTF-8 text")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return bad("server_url must not contain spaces or control characters")
		}
	}
	if !strings.Contains(s, "://") {
		if addr, err := netip.ParseAddr(s); err == nil && addr.Is6() {
			return bad("an IPv6 address must be written in brackets, e.g. https://[2001:db8::1]")
		}
		if i := strings.IndexByte(s, ':'); i > 0 && isSchemeLike(s[:i]) && !looksLikePort(s[i+1:]) {
			return bad("server_url must start with https:// (found %q)", s[:i+1])
		}
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("server_url is not a valid URL: %s", describeURLError(err))
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme == "https":
	case scheme == "http" && allowHTTP:
	case scheme == "http":
		return bad("server_url must use https://; plain http:// is not allowed on this service")
	default:
		return bad("server_url must start with https:// (found %q)", u.Scheme+"://")
	}
	if u.Opaque != "" {
		return bad("server_url is not a valid URL")
	}
	if u.User != nil {
		return bad("server_url must not contain a user name or password")
	}
	if u.RawQuery != "" || u.ForceQuery {
		return bad("server_url must not contain a query (the part after ?)")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return bad("server_url must not contain a fragment (the part after #)")
	}
	host, fe := normaliseHost(u.Hostname(), strings.HasPrefix(u.Host, "["))
	if fe != nil {
		return "", fe
	}
	port := u.Port()
	if port == "" && strings.HasSuffix(u.Host, ":") {
		return bad("server_url has an empty port after ':'")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return bad("server_url port must be a number from 1 to 65535")
		}
		port = strconv.Itoa(n)
		if (scheme == "https" && n == 443) || (scheme == "http" && n == 80) {
			port = ""
		}
	}
	p := cleanServerPath(u.Path)
	out := url.URL{Scheme: scheme, Host: host, Path: p}
	if strings.Contains(host, ":") {
		out.Host = "[" + host + "]"
	}
	if port != "" {
		out.Host += ":" + port
	}
	// The limit holds for the URL as stored and answered too, so that any
	// server_url the service gives out is accepted back: written in full,
	// a URL grows by the https:// put before it and by the %-escapes of
	// its path (up to twelve characters for one character typed).
	full := out.String()
	if len(full) > MaxServerURLLength { // ASCII: punycode and escapes
		return "", &FieldError{Field: field, Code: FieldTooLong, Message: fmt.Sprintf(
			"server_url must be at most %d characters written in full, with https:// and %%-escapes; this one is %d", MaxServerURLLength, len(full))}
	}
	return full, nil
}

func isSchemeLike(s string) bool {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return true
}

// looksLikePort tells "host:8065/path" (a port) from "ftp:host" (a scheme).
func looksLikePort(rest string) bool {
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	if rest == "" {
		return false
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func describeURLError(err error) string {
	if ue, ok := err.(*url.Error); ok {
		err = ue.Err
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "invalid port") && strings.Count(msg, ":") > 2:
		return "an IPv6 address must be written in brackets, e.g. https://[2001:db8::1]"
	case strings.Contains(msg, "invalid port"):
		return "the port must be a number from 1 to 65535"
	case strings.Contains(msg, "escape"):
		return "it contains a broken %-escape"
	case strings.Contains(msg, "IP-literal"), strings.Contains(msg, "IPv6"), strings.Contains(msg, "bracket"):
		return "an IPv6 address must be written in brackets, e.g. https://[2001:db8::1]"
	}
	return "the host or port cannot be read"
}

// normaliseHost checks and normalises a host name or IP literal.
func normaliseHost(host string, bracketed bool) (string, *FieldError) {
	bad := func(format string, args ...any) (string, *FieldError) {
		return "", &FieldError{Field: "server_url", Code: FieldInvalidFormat, Message: fmt.Sprintf(format, args...)}
	}
	if host == "" {
		return bad("server_url has no host name")
	}
	if bracketed {
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return bad("server_url has an invalid IPv6 address in brackets")
		}
		return addr.String(), nil
	}
	if strings.Contains(host, ":") {
		return bad("an IPv6 address must be written in brackets, e.g. https://[2001:db8::1]")
	}
	host = strings.TrimSuffix(host, ".")
	if addr, err := netip.ParseAddr(host); err == nil && addr.Is4() {
		return addr.String(), nil
	}
	ascii, err := idna.Lookup.ToASCII(host)
	if err == nil {
		// A name must survive a second pass: U+FFFD and friends map to
		// punycode that Lookup itself then refuses.
		_, err = idna.Lookup.ToASCII(ascii)
	}
	if err != nil {
		return bad("server_url host %q is not a valid host name", host)
	}
	ascii = strings.ToLower(ascii)
	if len(ascii) > 253 {
		return bad("server_url host name is longer than 253 characters")
	}
	labels := strings.Split(ascii, ".")
	for _, l := range labels {
		if l == "" {
			return bad("server_url host %q has an empty part between dots", host)
		}
		if len(l) > 63 {
			return bad("server_url host has a part longer than 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return bad("server_url host parts must not start or end with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return bad("server_url host %q may contain only letters, digits, '-' and '.'", host)
			}
		}
	}
	if isNumericLabel(labels[len(labels)-1]) {
		// "127.1", "0x7f.1" or "2130706433": resolvers read these as IP
		// addresses in forms other than dotted decimal; accept only that form.
		return bad("server_url host %q looks like an IP address but is not a dotted-decimal IPv4 address", host)
	}
	return ascii, nil
}

// isNumericLabel is true for a top-level label no DNS name can have: all
// digits, or a hex number, which is how resolvers spell IPv4 addresses.
func isNumericLabel(l string) bool {
	if strings.HasPrefix(l, "0x") {
		l = l[2:]
		if l == "" {
			return true
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

// cleanServerPath removes dot segments, duplicate and trailing slashes and a
// pasted API path, so that every way of writing one server's address ends
// the same.
func cleanServerPath(p string) string {
	if p == "" {
		return ""
	}
	p = path.Clean("/" + p)
	// Until none is left, so the result is one this would keep as it is
	// ("/mm/api/v4/api/v4" is "/mm", not "/mm/api/v4", which a second
	// reading would cut again).
	for stripped := true; stripped; {
		stripped = false
		lower := strings.ToLower(p)
		for _, suffix := range []string{"/api/v4/users/me", "/api/v4"} {
			if strings.HasSuffix(lower, suffix) {
				p, stripped = p[:len(p)-len(suffix)], true
				break
			}
		}
	}
	if p == "/" {
		return ""
	}
	return strings.TrimSuffix(p, "/")
}

// ParseToken trims a pasted personal access token and checks it has
// Mattermost's id format. Messages say what is wrong without echoing it.
func ParseToken(raw string) (string, *FieldError) {
	const field = "token"
	bad := func(msg string) (string, *FieldError) {
		return "", &FieldError{Field: field, Code: FieldInvalidFormat, Message: msg}
	}
	t := strings.TrimSpace(raw)
	if t == "" {
		return "", &FieldError{Field: field, Code: FieldRequired, Message: "token is required: paste the Access Token shown when you created a personal access token"}
	}
	if len(t) > MaxTokenLength {
		return "", &FieldError{Field: field, Code: FieldTooLong, Message: fmt.Sprintf("token must be at most %d characters; a Mattermost personal access token is %d", MaxTokenLength, TokenLength)}
	}
	if len(t) > 7 && strings.EqualFold(t[:7], "bearer ") {
		return bad("remove the \"Bearer \" prefix: paste only the token itself")
	}
	if len(t) > 6 && strings.EqualFold(t[:6], "token ") {
		return bad("remove the \"Token \" prefix: paste only the token itself")
	}
	upper, space, other := false, false, false
	for _, r := range t {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r >= 'A' && r <= 'Z':
			upper = true
		case unicode.IsSpace(r):
			space = true
		default:
			other = true
		}
	}
	switch {
	case space:
		return bad("token must not contain spaces or line breaks; paste it as one piece")
	case upper:
		return bad("token contains upper-case letters; Mattermost tokens use only lower-case letters a-z and digits 0-9")
	case other:
		return bad("token may contain only lower-case letters a-z and digits 0-9")
	case len(t) != TokenLength:
		return bad(fmt.Sprintf("token is %d characters long; a Mattermost personal access token is exactly %d", len(t), TokenLength))
	}
	return t, nil
}

// RequireEndUserID is ValidateEndUserID where the id must be given.
func RequireEndUserID(id *string) *FieldError {
	if id == nil {
		return &FieldError{Field: "end_user_id", Code: FieldRequired, Message: "end_user_id is required: your app's own id for this user, 1 to 255 characters"}
	}
	return ValidateEndUserID(id)
}

// ValidateEndUserID checks the app's own id for its user, if given.
func ValidateEndUserID(id *string) *FieldError {
	const field = "end_user_id"
	if id == nil {
		return nil
	}
	n := utf8.RuneCountInString(*id)
	switch {
	case n == 0:
		return &FieldError{Field: field, Code: FieldRequired, Message: "end_user_id must not be empty; leave it out or give 1 to 255 characters"}
	case n > MaxEndUserIDLength:
		return &FieldError{Field: field, Code: FieldTooLong, Message: fmt.Sprintf("end_user_id must be at most %d characters", MaxEndUserIDLength)}
	case !utf8.ValidString(*id):
		return &FieldError{Field: field, Code: FieldInvalidFormat, Message: "end_user_id must be valid UTF-8"}
	}
	for _, r := range *id {
		// Format characters (bidi overrides, zero-width joiners) are
		// invisible: two ids that look alike must be alike.
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return &FieldError{Field: field, Code: FieldInvalidFormat, Message: "end_user_id must not contain control or invisible formatting characters (such as bidi overrides or zero-width spaces)"}
		}
	}
	return nil
}

// TokenHint is the part of a token that may be shown: its last 4 characters.
func TokenHint(token string) string {
	if len(token) <= 4 {
		return token
	}
	return token[len(token)-4:]
}

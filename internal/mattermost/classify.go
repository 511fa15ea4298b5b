package mattermost

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// decodeAnswer reads the JSON of a server's answer into v, leniently as
// encoding/json would: member names matched without regard to case, the
// last of a repeated name kept, bytes that are not UTF-8 replaced. It uses
// go-json-experiment's decoder, which reads the answer once where
// encoding/json first checks it whole: a create decodes two answers, and
// that first pass was a tenth of their cost. Errors: the answer is not one
// JSON value of v's shape.
func decodeAnswer(data []byte, v any) error {
	return json.Unmarshal(data, v, json.MatchCaseInsensitiveNames(true),
		jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
}

// idPattern is Mattermost's id format (users, tokens, sessions).
var idPattern = regexp.MustCompile(`^[a-z0-9]{26}$`)

// Mattermost's own bounds on a user's fields.
const (
	MaxUsernameLength = 64
	MaxEmailLength    = 254
)

// versionPattern is the start of X-Version-Id: major.minor.patch.
var versionPattern = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)(?:\.|$)`)

// ServerVersion extracts "major.minor.patch" from an X-Version-Id header
// ("11.4.0.dev.<hash>.false"); it is empty when the header is not one.
func ServerVersion(xVersionID string) string {
	m := versionPattern.FindStringSubmatch(strings.TrimSpace(xVersionID))
	if m == nil {
		return ""
	}
	return m[1] + "." + m[2] + "." + m[3]
}

// apiError is the body of every Mattermost API error.
type apiError struct {
	ID         string `json:"id"`
	Message    string `json:"message"`
	StatusCode int    `json:"status_code"`
}

// isMattermostError tells a Mattermost error body from a proxy's page.
func isMattermostError(body []byte) bool {
	var e apiError
	return decodeAnswer(body, &e) == nil && e.ID != "" && e.StatusCode != 0
}

// Classify turns one answer of GET /api/v4/users/me into an Identity or an
// *connection.UpstreamError. It is pure, so it can be fuzzed; body is at
// most MaxBody+1 bytes (more means too large).
func Classify(server string, status int, h http.Header, body []byte) (connection.Identity, error) {
	up := func(code, format string) error {
		return &connection.UpstreamError{Code: code, Message: fmt.Sprintf(format, server)}
	}
	version := ServerVersion(h.Get("X-Version-Id"))
	isMM := version != "" || isMattermostError(body)
	switch {
	case len(body) > MaxBody:
		return connection.Identity{}, up(connection.CodeNotMattermost, "%s sent an answer far larger than Mattermost's, so it does not look like a Mattermost server. Check the server URL.")
	case status == http.StatusOK:
		if version == "" {
			return connection.Identity{}, up(connection.CodeNotMattermost, "%s answered, but not like a Mattermost server does. Check the server URL: it is the address in your browser when you use Mattermost.")
		}
		var u struct {
			ID       string `json:"id"`
			Username string `json:"username"`
			Email    string `json:"email"`
			IsBot    bool   `json:"is_bot"`
		}
		// Bounded as Mattermost bounds them, so a hostile server cannot
		// make one connection megabytes large.
		if err := decodeAnswer(bytes.TrimSpace(body), &u); err != nil || !idPattern.MatchString(u.ID) ||
			u.Username == "" || len(u.Username) > MaxUsernameLength || len(u.Email) > MaxEmailLength ||
			!utf8.ValidString(u.Username) || !utf8.ValidString(u.Email) {
			return connection.Identity{}, up(connection.CodeNotMattermost, "%s answered, but without the Mattermost user it should describe. Check the server URL: it is the address in your browser when you use Mattermost.")
		}
		return connection.Identity{
			User:          connection.MattermostUser{ID: u.ID, Username: u.Username, Email: u.Email, IsBot: u.IsBot},
			ServerVersion: version,
		}, nil
	case (status == http.StatusUnauthorized || status == http.StatusForbidden) && isMM:
		return connection.Identity{}, up(connection.CodeTokenRejected, "The Mattermost server at %s rejected this token. Check that you pasted the Access Token (not the Token ID) without typos, that it has not been revoked, and that your account is active. If Profile > Security has no Personal Access Tokens section, or Mattermost refused to create a token, ask a System Admin to enable personal access tokens (System Console > Integrations > Integration Management) and to grant your account \"Allow this account to generate personal access tokens\" (System Console > User Management > Users).")
	case status == http.StatusTooManyRequests:
		e := up(connection.CodeUpstreamRateLimited, "%s is limiting how fast requests may be made. Wait a moment and try again.").(*connection.UpstreamError)
		e.RetryAfter = parseRetryAfter(h.Get("Retry-After"))
		return connection.Identity{}, e
	case status >= 500 && isMM:
		return connection.Identity{}, up(connection.CodeUpstreamError, "The Mattermost server at %s had an internal error. Try again later, or tell its administrator if it persists.")
	case status >= 500:
		return connection.Identity{}, up(connection.CodeUpstreamError, "%s answered with a server error. Try again later, or tell its administrator if it persists.")
	case status >= 300 && status < 400:
		return connection.Identity{}, up(connection.CodeRedirectNotAllowed, "%s redirected the check elsewhere. Enter the address of the Mattermost server itself.")
	}
	return connection.Identity{}, up(connection.CodeNotMattermost, "%s answered, but not like a Mattermost server does. Check the server URL: it is the address in your browser when you use Mattermost.")
}

// parseRetryAfter reads delay-seconds or an HTTP date; zero if neither.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(min(n, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return min(d, 24*time.Hour).Round(time.Second)
		}
	}
	return 0
}

package mattermost

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	json "github.com/go-json-experiment/json"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// session is the part of a Mattermost session that tells which token made
// it. The answer also carries other sessions' csrf secrets; they are never
// decoded into anything, kept or logged.
type session struct {
	CreateAt int64 `json:"create_at"`
	Props    struct {
		Type          string `json:"type"`
		AccessTokenID string `json:"user_access_token_id"`
	} `json:"props"`
}

// TokenID implements connection.Revoker. Mattermost names no token in its
// answers, but lists the account's sessions (GET /api/v4/users/me/sessions);
// each personal access token has one, made on its first use, with
// props.user_access_token_id. The id is this token's only when that is
// unambiguous: the account's only token session, or the only one made in
// the same second (by the server's clock) as firstUse, the check that just
// used the token first. Otherwise it returns "".
func (c *Client) TokenID(ctx context.Context, serverURL, token string, firstUse time.Time) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	target, err := apiURL(serverURL, "users/me/sessions")
	if err != nil {
		return "", err
	}
	resp, err := c.get(ctx, target, token)
	if err != nil {
		return "", c.classifyError(ctx, serverURL, err)
	}
	defer discard(resp)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("sessions of %s: answered %d", serverURL, resp.StatusCode)
	}
	var sessions []session
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	if err == nil {
		err = decodeAnswer(raw, &sessions)
	}
	if err != nil {
		return "", fmt.Errorf("sessions of %s: unreadable answer", serverURL)
	}
	return pickTokenID(sessions, firstUse), nil
}

// pickTokenID applies TokenID's rule to the sessions listed.
func pickTokenID(sessions []session, firstUse time.Time) string {
	var all, sameSecond []string
	for _, s := range sessions {
		if s.Props.Type != "UserAccessToken" || !idPattern.MatchString(s.Props.AccessTokenID) {
			continue
		}
		all = append(all, s.Props.AccessTokenID)
		if !firstUse.IsZero() && s.CreateAt/1000 == firstUse.Unix() {
			sameSecond = append(sameSecond, s.Props.AccessTokenID)
		}
	}
	switch {
	case len(all) == 1:
		return all[0]
	case len(sameSecond) == 1:
		return sameSecond[0]
	}
	return ""
}

// RevokeToken implements connection.Revoker with POST
// /api/v4/users/tokens/revoke, authenticated as the token itself.
func (c *Client) RevokeToken(ctx context.Context, serverURL, token, tokenID string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	target, err := apiURL(serverURL, "users/tokens/revoke")
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"token_id": tokenID})
	resp, err := c.do(ctx, http.MethodPost, target, token, body)
	if err != nil {
		return c.classifyError(ctx, serverURL, err)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	discard(resp)
	if err != nil {
		return c.classifyError(ctx, serverURL, err)
	}
	return classifyRevoke(serverURL, resp.StatusCode, resp.Header, raw)
}

// classifyRevoke names the answer to a revoke.
func classifyRevoke(server string, status int, h http.Header, body []byte) error {
	isMM := ServerVersion(h.Get("X-Version-Id")) != "" || isMattermostError(body)
	up := func(code, msg string) error {
		return &connection.UpstreamError{Code: code, Message: fmt.Sprintf(msg, server)}
	}
	switch {
	case status == http.StatusOK && isMM:
		return nil
	case status == http.StatusForbidden && isMM:
		return up(connection.CodeNotPermitted, "The Mattermost server at %s does not let this account revoke its own tokens.")
	case status == http.StatusNotFound && isMattermostError(body):
		return up(connection.CodeTokenUnknown, "The Mattermost server at %s does not know this token.")
	case status == http.StatusUnauthorized && isMM:
		return up(connection.CodeTokenRejected, "The Mattermost server at %s no longer accepts this token.")
	case status == http.StatusTooManyRequests:
		e := up(connection.CodeUpstreamRateLimited, "%s is limiting how fast requests may be made.").(*connection.UpstreamError)
		e.RetryAfter = parseRetryAfter(h.Get("Retry-After"))
		return e
	}
	return up(connection.CodeUpstreamError, fmt.Sprintf("%%s answered the revoke with %d.", status))
}

// apiURL is the API endpoint path under a stored server URL.
func apiURL(serverURL, path string) (*url.URL, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, fmt.Errorf("server URL: %w", err)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/") + "/api/v4/" + path}, nil
}

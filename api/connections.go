package api

import (
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/audit"
	"github.com/mmconnect/mmconnect/internal/connection"
)

// timeFormat is RFC 3339 in UTC with exactly microsecond precision.
const timeFormat = "2006-01-02T15:04:05.000000Z"

// createConnectionRequest is a connect; a missing field and an empty one
// are the same problem. Its field rules are the domain's (newValidator).
type createConnectionRequest struct {
	ServerURL string  `json:"server_url"`
	Token     string  `json:"token"`
	EndUserID *string `json:"end_user_id"`
}

type mattermostUserResponse struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Email    string `json:"email"`
	IsBot    bool   `json:"is_bot"`
}

type lastErrorResponse struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	At      string `json:"at"`
}

type upstreamRevocationResponse struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	At      string `json:"at"`
}

type connectionResponse struct {
	ID             string                 `json:"id"`
	Provider       string                 `json:"provider"`
	ServerURL      string                 `json:"server_url"`
	EndUserID      *string                `json:"end_user_id"`
	Status         string                 `json:"status"`
	MattermostUser mattermostUserResponse `json:"mattermost_user"`
	ServerVersion  string                 `json:"server_version"`
	TokenHint      string                 `json:"token_hint"`
	CreatedAt      string                 `json:"created_at"`
	UpdatedAt      string                 `json:"updated_at"`
	LastVerifiedAt *string                `json:"last_verified_at"`
	LastCheckedAt  *string                `json:"last_checked_at"`
	InvalidSince   *string                `json:"invalid_since"`
	RevokedAt      *string                `json:"revoked_at"`
	LastError      *lastErrorResponse     `json:"last_error"`
	// UpstreamRevocation is what became of the token in Mattermost.
	UpstreamRevocation *upstreamRevocationResponse `json:"upstream_revocation"`
}

// listResponse is the body of every listing: a page of items, and the
// cursor of the next page (null on the last).
type listResponse[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// respondList answers a page of items, each converted by toResponse, with
// next as the next page's cursor ("" on the last page).
func respondList[I, T any](c echo.Context, items []I, next string, toResponse func(I) T) error {
	out := listResponse[T]{Data: make([]T, len(items))}
	for i, item := range items {
		out.Data[i] = toResponse(item)
	}
	if next != "" {
		out.NextCursor = &next
	}
	return respond(c, http.StatusOK, out)
}

type credentialsResponse struct {
	ServerURL string `json:"server_url"`
	Token     string `json:"token"`
	// Status and LastVerifiedAt tell a backend holding an invalid
	// connection's token that it is probably dead.
	Status         string  `json:"status"`
	LastVerifiedAt *string `json:"last_verified_at"`
}

// formatTime writes t in timeFormat. A page of connections formats
// several times per connection, and time.Format, which reads its layout
// on every call, was a fifth of a cached page's CPU; this writes the one
// layout directly. Years outside 0-9999 (which no stored time has) go to
// time.Format. TestFormatTime holds the two to the same text.
func formatTime(t time.Time) string {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.Format(timeFormat)
	}
	hour, minute, sec := t.Clock()
	var b [len(timeFormat)]byte
	putDigits(b[0:4], year)
	b[4] = '-'
	putDigits(b[5:7], int(month))
	b[7] = '-'
	putDigits(b[8:10], day)
	b[10] = 'T'
	putDigits(b[11:13], hour)
	b[13] = ':'
	putDigits(b[14:16], minute)
	b[16] = ':'
	putDigits(b[17:19], sec)
	b[19] = '.'
	putDigits(b[20:26], t.Nanosecond()/1000) // truncated, as the layout's .000000 does
	b[26] = 'Z'
	return string(b[:])
}

// putDigits writes v into dst in decimal, zero-padded to dst's length.
func putDigits(dst []byte, v int) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

func formatTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := formatTime(*t)
	return &s
}

// toConnectionResponse is the one place a Connection becomes JSON; the
// sealed token has no field here.
func toConnectionResponse(c connection.Connection) connectionResponse {
	r := connectionResponse{
		ID:        c.ID,
		Provider:  connection.Provider,
		ServerURL: c.ServerURL,
		EndUserID: c.EndUserID,
		Status:    string(c.Status),
		MattermostUser: mattermostUserResponse{
			ID: c.MattermostUser.ID, Username: c.MattermostUser.Username, Email: c.MattermostUser.Email,
			IsBot: c.MattermostUser.IsBot,
		},
		ServerVersion:  c.ServerVersion,
		TokenHint:      c.TokenHint,
		CreatedAt:      formatTime(c.CreatedAt),
		UpdatedAt:      formatTime(c.UpdatedAt),
		LastVerifiedAt: formatTimePtr(c.LastVerifiedAt),
		LastCheckedAt:  formatTimePtr(c.LastCheckedAt),
		InvalidSince:   formatTimePtr(c.InvalidSince),
		RevokedAt:      formatTimePtr(c.RevokedAt),
	}
	if e := c.LastError; e != nil {
		r.LastError = &lastErrorResponse{Code: e.Code, Message: e.Message, At: formatTime(e.At)}
	}
	if u := c.UpstreamRevocation; u != nil {
		r.UpstreamRevocation = &upstreamRevocationResponse{Status: string(u.Status), Message: u.Message, At: formatTime(u.At)}
	}
	return r
}

func connectionLocation(id string) string { return "/connections/" + url.PathEscape(id) }

// endUserFor applies a connect session's limit: its own end user, never
// another. The app's backend may name any end user, or none.
func endUserFor(c echo.Context, requested *string) (*string, error) {
	sess := sessionOf(c)
	if sess == nil {
		return requested, nil
	}
	if requested != nil && *requested != sess.EndUserID {
		return nil, errForbidden("A connect session acts only for its own end user; leave end_user_id out or use the session's.")
	}
	end := sess.EndUserID
	return &end, nil
}

// visibleConnection loads a connection the caller may see: a connect
// session sees only its end user's, others are as if absent.
func (s *Server) visibleConnection(c echo.Context) (connection.Connection, error) {
	conn, err := s.deps.Connections.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return connection.Connection{}, err
	}
	if sess := sessionOf(c); sess != nil && (conn.EndUserID == nil || *conn.EndUserID != sess.EndUserID) {
		return connection.Connection{}, connection.ErrNotFound
	}
	return conn, nil
}

func (s *Server) createConnection(c echo.Context) error {
	var req createConnectionRequest
	if err := s.bindJSON(c, &req); err != nil {
		return err
	}
	endUser, err := endUserFor(c, req.EndUserID)
	if err != nil {
		return err
	}
	req.EndUserID = endUser
	in := connection.ConnectInput{ServerURL: req.ServerURL, Token: req.Token, EndUserID: req.EndUserID}
	if s.deps.Audit != nil {
		in.Audit = s.auditWho(c) // recorded with the connection, in its transaction
	}
	conn, created, err := s.deps.Connections.Connect(c.Request().Context(), in)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, connectionLocation(conn.ID))
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return respond(c, status, toConnectionResponse(conn))
}

func (s *Server) getConnection(c echo.Context) error {
	conn, err := s.visibleConnection(c)
	if err != nil {
		return err
	}
	return respond(c, http.StatusOK, toConnectionResponse(conn))
}

// listQuery reads the listing parameters, refusing unknown, repeated or
// empty ones rather than silently ignoring a typo.
func listQuery(c echo.Context) (connection.ListQuery, error) {
	var q connection.ListQuery
	page, err := listParams(c, "end_user_id, status", func(name, v string) (bool, error) {
		switch name {
		case "end_user_id":
			q.EndUserID = &v
		case "status":
			st := connection.Status(v)
			if !st.Valid() {
				return true, invalidRequest("status must be one of active, invalid, revoked.")
			}
			q.Status = &st
		default:
			return false, nil
		}
		return true, nil
	})
	q.Limit, q.Cursor = page.Limit, page.Cursor
	return q, err
}

func (s *Server) listConnections(c echo.Context) error {
	q, err := listQuery(c)
	if err != nil {
		return err
	}
	if q.EndUserID, err = endUserFor(c, q.EndUserID); err != nil {
		return err
	}
	page, err := s.deps.Connections.List(c.Request().Context(), q)
	if err != nil {
		return err
	}
	return respondList(c, page.Connections, page.NextCursor, toConnectionResponse)
}

func (s *Server) verifyConnection(c echo.Context) error {
	if _, err := s.visibleConnection(c); err != nil {
		return err
	}
	conn, err := s.deps.Connections.Verify(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	s.audit(c, audit.ConnectionVerify, conn.ID, string(conn.Status))
	return respond(c, http.StatusOK, toConnectionResponse(conn))
}

func (s *Server) getCredentials(c echo.Context) error {
	cred, err := s.deps.Connections.Credentials(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	s.audit(c, audit.ConnectionCredential, c.Param("id"), "")
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	c.Response().Header().Set("Pragma", "no-cache")
	return respond(c, http.StatusOK, credentialsResponse{ServerURL: cred.ServerURL, Token: cred.Token,
		Status: string(cred.Status), LastVerifiedAt: formatTimePtr(cred.LastVerifiedAt)})
}

func (s *Server) deleteConnection(c echo.Context) error {
	upstream := true
	params, err := url.ParseQuery(c.Request().URL.RawQuery)
	if err != nil {
		return invalidRequest("The query string is malformed (a broken %-escape or ';').")
	}
	for name, values := range params {
		if name != "revoke_upstream" {
			return invalidRequest("Unknown query parameter " + name + "; the only one is revoke_upstream.")
		}
		if len(values) != 1 || (values[0] != "true" && values[0] != "false") {
			return invalidRequest("revoke_upstream must be given once, as true or false.")
		}
		upstream = values[0] == "true"
	}
	if _, err := s.visibleConnection(c); err != nil {
		return err
	}
	conn, err := s.deps.Connections.Revoke(c.Request().Context(), c.Param("id"), upstream)
	if err != nil {
		return err
	}
	detail := ""
	if conn.UpstreamRevocation != nil {
		detail = "upstream " + string(conn.UpstreamRevocation.Status)
	}
	s.audit(c, audit.ConnectionRevoke, conn.ID, detail)
	return c.NoContent(http.StatusNoContent)
}

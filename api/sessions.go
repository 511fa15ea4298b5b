package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/audit"
)

// createSessionRequest opens a connect session; its field rule is the
// domain's (newValidator).
type createSessionRequest struct {
	EndUserID *string `json:"end_user_id"`
}

type sessionResponse struct {
	ID         string `json:"id"`
	Token      string `json:"token"`
	ExpiresAt  string `json:"expires_at"`
	ConnectURL string `json:"connect_url"`
}

type sessionInfoResponse struct {
	EndUserID      string               `json:"end_user_id"`
	ExpiresAt      string               `json:"expires_at"`
	Connections    []connectionResponse `json:"connections"`
	AllowedOrigins []string             `json:"allowed_origins"`
	AllowHTTP      bool                 `json:"allow_http"`
	AppName        string               `json:"app_name"`
	HelpURL        *string              `json:"help_url"`
}

func (s *Server) createSession(c echo.Context) error {
	var req createSessionRequest
	if err := s.bindJSON(c, &req); err != nil {
		return err
	}
	sess, token, err := s.deps.Sessions.Open(c.Request().Context(), *req.EndUserID)
	if err != nil {
		return err
	}
	s.audit(c, audit.SessionOpen, "", "session "+sess.ID+" for "+sess.EndUserID)
	// The token rides in the fragment, which browsers never send to a server.
	return respond(c, http.StatusCreated, sessionResponse{
		ID:         sess.ID,
		Token:      token,
		ExpiresAt:  formatTime(sess.ExpiresAt),
		ConnectURL: s.deps.PublicURL + "/connect#session=" + token,
	})
}

func (s *Server) deleteSession(c echo.Context) error {
	if err := s.deps.Sessions.End(c.Request().Context(), c.Param("id")); err != nil {
		return err
	}
	s.audit(c, audit.SessionEnd, "", "session "+c.Param("id"))
	return c.NoContent(http.StatusNoContent)
}

// getSession tells the Connect page who it is for and what is already there.
func (s *Server) getSession(c echo.Context) error {
	sess := sessionOf(c)
	live, err := s.deps.Connections.Live(c.Request().Context(), sess.EndUserID)
	if err != nil {
		return err
	}
	out := sessionInfoResponse{
		EndUserID:      sess.EndUserID,
		ExpiresAt:      formatTime(sess.ExpiresAt),
		Connections:    make([]connectionResponse, len(live)),
		AllowedOrigins: append([]string{}, s.deps.AllowedOrigins...),
		AllowHTTP:      s.deps.AllowHTTP,
		AppName:        s.deps.AppName,
	}
	if s.deps.HelpURL != "" {
		out.HelpURL = &s.deps.HelpURL
	}
	for i, conn := range live {
		out.Connections[i] = toConnectionResponse(conn)
	}
	return respond(c, http.StatusOK, out)
}

package api

import (
	"errors"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/session"
)

// Who is calling: the app's backend (an API key) or one end user's browser
// (a connect session, limited to that end user).
const ctxSession = "session"

// errUnauthenticated: no credential, or one that is neither an API key nor
// a live connect session. The error table (problem.go) maps it, with
// session.ErrExpired and *forbiddenError, like every other failure.
var errUnauthenticated = errors.New("no valid API key or connect session")

// forbiddenError: the caller is known but may not do this.
type forbiddenError struct{ why string }

func (e *forbiddenError) Error() string { return "forbidden: " + e.why }

func errUnauthorized() error { return errUnauthenticated }

func errForbidden(why string) error { return &forbiddenError{why: why} }

// authenticate admits an API key or a live connect session; it records the
// session, if that is what it was, for the handlers to scope by.
func (s *Server) authenticate(c echo.Context) error {
	token, ok := bearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
	if !ok {
		return errUnauthorized()
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	if name, ok := s.deps.APIKeys.Identify(token); ok {
		c.Set(ctxAPIKey, name)
		return nil
	}
	if !strings.HasPrefix(token, session.TokenPrefix) || s.deps.Sessions == nil {
		return errUnauthorized()
	}
	sess, err := s.deps.Sessions.Authenticate(c.Request().Context(), token)
	switch {
	case errors.Is(err, session.ErrNotFound):
		return errUnauthorized()
	case err != nil:
		return err // session.ErrExpired among them
	}
	c.Set(ctxSession, &sess)
	return nil
}

const ctxAPIKey = "api_key"

// apiKeyOf names the caller's API key ("" for a connect session).
func apiKeyOf(c echo.Context) string {
	name, _ := c.Get(ctxAPIKey).(string)
	return name
}

// actorOf names who is calling, for the audit trail: the API key's name,
// or "session:<end user>".
func actorOf(c echo.Context) string {
	if sess := sessionOf(c); sess != nil {
		return "session:" + sess.EndUserID
	}
	return apiKeyOf(c)
}

// sessionOf is the caller's connect session, or nil for the app's backend.
func sessionOf(c echo.Context) *session.Session {
	sess, _ := c.Get(ctxSession).(*session.Session)
	return sess
}

// appOrSession admits the app's backend and connect sessions.
func (s *Server) appOrSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.authenticate(c); err != nil {
			return err
		}
		return next(c)
	}
}

// appOnly admits only the app's backend: a connect session may not read
// tokens or open more sessions.
func (s *Server) appOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.authenticate(c); err != nil {
			return err
		}
		if sessionOf(c) != nil {
			return errForbidden("A connect session cannot do this; call it from your backend with an API key.")
		}
		return next(c)
	}
}

// sessionOnly admits only connect sessions.
func (s *Server) sessionOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.authenticate(c); err != nil {
			return err
		}
		if sessionOf(c) == nil {
			return errForbidden("This endpoint describes a connect session; call it with the session's token.")
		}
		return next(c)
	}
}

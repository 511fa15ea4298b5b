package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/session"
)

// Who is calling: the app's backend (an API key) or one end user's browser
// (a connect session, limited to that end user).
const ctxSession = "session"

func errUnauthorized() error {
	return &requestError{http.StatusUnauthorized, "unauthorized", "Send a valid API key or connect session token as Authorization: Bearer <token>."}
}

func errForbidden(detail string) error {
	return &requestError{http.StatusForbidden, "forbidden", detail}
}

// authenticate admits an API key or a live connect session; it records the
// session, if that is what it was, for the handlers to scope by.
func (s *Server) authenticate(c echo.Context) error {
	token, ok := bearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
	if !ok {
		return errUnauthorized()
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	if s.deps.APIKeys.Match(token) {
		return nil
	}
	if !strings.HasPrefix(token, session.TokenPrefix) || s.deps.Sessions == nil {
		return errUnauthorized()
	}
	sess, err := s.deps.Sessions.Authenticate(c.Request().Context(), token)
	switch {
	case errors.Is(err, session.ErrExpired):
		return &requestError{http.StatusUnauthorized, "session_expired", "This connect session has expired. Start again from the app."}
	case errors.Is(err, session.ErrNotFound):
		return errUnauthorized()
	case err != nil:
		return err
	}
	c.Set(ctxSession, &sess)
	return nil
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

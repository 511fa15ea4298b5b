package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/labstack/echo/v4"
)

type healthResponse struct {
	Status string `json:"status"`
}

// healthz says the process serves HTTP; it checks nothing else, so a slow
// database never gets a live process restarted.
func (s *Server) healthz(c echo.Context) error {
	return respond(c, http.StatusOK, healthResponse{Status: "ok"})
}

// readyz says whether this replica can serve requests: the database answers.
func (s *Server) readyz(c echo.Context) error {
	if err := s.deps.Connections.Ready(c.Request().Context()); err != nil {
		return err
	}
	return respond(c, http.StatusOK, healthResponse{Status: "ok"})
}

// metrics serves Prometheus's scrape.
func (s *Server) metrics(c echo.Context) error {
	s.deps.Metrics.Handler().ServeHTTP(c.Response(), c.Request())
	return nil
}

// metricsToken admits a scrape that presents MetricsToken.
func (s *Server) metricsToken(next echo.HandlerFunc) echo.HandlerFunc {
	want := sha256.Sum256([]byte(s.deps.MetricsToken))
	return func(c echo.Context) error {
		token, ok := bearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
		got := sha256.Sum256([]byte(token))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			return errUnauthorized()
		}
		return next(c)
	}
}

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", s.deps.OpenAPI)
}

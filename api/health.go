package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
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

// NewMetricsServer serves /metrics alone, for the listener of its own
// (MMCONNECT_METRICS_ADDR): behind token when one is set, with the same
// check and the same problem+json answers as the API's /metrics, and open
// otherwise, where the operator chose the address (an API key is not asked
// for there: a scraper should not hold a key that reads tokens). Anything
// else is the API's 404 or 405.
func NewMetricsServer(m Metrics, token string, log *slog.Logger) http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s := &Server{echo: e, deps: Deps{Metrics: m, MetricsToken: token, Logger: log}}
	e.HTTPErrorHandler = errorHandler(log)
	e.Use(s.requestIDMiddleware)
	var guard []echo.MiddlewareFunc
	if token != "" {
		guard = append(guard, s.metricsToken)
	}
	e.Match([]string{http.MethodGet, http.MethodHead}, "/metrics", s.metrics, guard...)
	return e
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

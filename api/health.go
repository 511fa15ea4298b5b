package api

import (
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

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", s.deps.OpenAPI)
}

package api

import (
	"embed"
	"net/http"
	"path"
	"strings"

	"github.com/labstack/echo/v4"
)

// connectPage is the Connect page: plain HTML, CSS and JS, served from the
// binary, with no inline script or style so the CSP can forbid both.
//
//go:embed connectpage
var connectPageFS embed.FS

var assetTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
}

// pageCSP allows only the page's own files and framing by the allowed
// origins; it depends only on the configuration, so it is built once.
func pageCSP(allowedOrigins []string) string {
	ancestors := "'none'"
	if len(allowedOrigins) > 0 {
		ancestors = strings.Join(allowedOrigins, " ")
	}
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors " + ancestors
}

// pageHeaders lock the page down: only its own files, framed only by the
// allowed origins, no referrer. There is deliberately no
// Cross-Origin-Opener-Policy: same-origin, which would cut a popup off from
// the app that opened it.
func (s *Server) pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", s.pageCSP)
	if len(s.deps.AllowedOrigins) == 0 {
		h.Set("X-Frame-Options", "DENY")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

func (s *Server) connectPage(c echo.Context) error {
	html, err := connectPageFS.ReadFile("connectpage/index.html")
	if err != nil {
		return err
	}
	s.pageHeaders(c.Response().Header())
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", html)
}

func (s *Server) connectAsset(c echo.Context) error {
	name := c.Param("file")
	ct, ok := assetTypes[path.Ext(name)]
	if !ok || strings.ContainsAny(name, "/\\") {
		return echo.ErrNotFound
	}
	body, err := connectPageFS.ReadFile("connectpage/" + name)
	if err != nil {
		return echo.ErrNotFound
	}
	s.pageHeaders(c.Response().Header())
	c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
	return c.Blob(http.StatusOK, ct, body)
}

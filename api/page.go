package api

import (
	"bytes"
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
	".svg": "image/svg+xml",
}

// connectSDK is the frontend helper an app's own pages import.
//
//go:embed connectsdk
var connectSDKFS embed.FS

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

// connectPageHTML is the page with the allowed origins filled in, so that
// even a page whose session failed can tell its opener; built once.
func connectPageHTML(allowedOrigins []string) []byte {
	html, err := connectPageFS.ReadFile("connectpage/index.html")
	if err != nil {
		panic("api: the Connect page is not embedded: " + err.Error())
	}
	// Origins are scheme://host[:port] (config.ParseOrigin): nothing in
	// them needs escaping in an attribute.
	return bytes.Replace(html, []byte("{{ALLOWED_ORIGINS}}"), []byte(strings.Join(allowedOrigins, " ")), 1)
}

func (s *Server) connectPage(c echo.Context) error {
	s.pageHeaders(c.Response().Header())
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", s.pageHTML)
}

// connectSDK serves sdk.js (an ES module) and sdk.d.ts to any origin: they
// are public, and a module script from another origin needs CORS.
func (s *Server) connectSDK(c echo.Context) error {
	name := strings.TrimPrefix(c.Path(), "/connect/")
	body, err := connectSDKFS.ReadFile("connectsdk/" + name)
	if err != nil {
		return echo.ErrNotFound
	}
	h := c.Response().Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(echo.HeaderCacheControl, "no-cache")
	ct := "text/javascript; charset=utf-8"
	if strings.HasSuffix(name, ".d.ts") {
		ct = "text/plain; charset=utf-8"
	}
	return c.Blob(http.StatusOK, ct, body)
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

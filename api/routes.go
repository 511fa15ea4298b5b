package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// routes is the whole API on one screen. Authentication is per route, so
// routing answers first: an unknown path is 404 and a wrong method 405 for
// anyone, with or without a key.
func (s *Server) routes() {
	e := s.echo
	// HEAD works wherever GET does (the server sends no body for it).
	get := func(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) {
		e.Match([]string{http.MethodGet, http.MethodHead}, path, h, m...)
	}
	get("/healthz", s.healthz)
	get("/readyz", s.readyz)
	get("/openapi.yaml", s.openapi)
	if s.deps.Metrics != nil && !s.deps.MetricsElsewhere {
		if s.deps.MetricsToken != "" {
			get("/metrics", s.metrics, s.metricsToken)
		} else {
			get("/metrics", s.metrics, s.appOnly)
		}
	}

	// The app's backend (API key) or an end user's browser (connect session,
	// limited to that end user's connections).
	e.POST("/connections", s.createConnection, s.appOrSession, s.idempotent, s.outbound)
	get("/connections", s.listConnections, s.appOrSession)
	get("/connections/:id", s.getConnection, s.appOrSession)
	e.DELETE("/connections/:id", s.deleteConnection, s.appOrSession)
	e.POST("/connections/:id/verify", s.verifyConnection, s.appOrSession, s.outbound)

	// The app's backend only.
	get("/connections/:id/credentials", s.getCredentials, s.appOnly)
	e.Match([]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		"/connections/:id/proxy/*", s.proxy, s.appOnly)
	e.POST("/connect/sessions", s.createSession, s.appOnly, s.idempotent)
	e.DELETE("/connect/sessions/:id", s.deleteSession, s.appOnly)
	get("/webhooks/deliveries", s.listDeliveries, s.appOnly)
	get("/audit-events", s.listAuditEvents, s.appOnly)
	e.POST("/webhooks/deliveries/:id/retry", s.retryDelivery, s.appOnly)
	e.POST("/webhooks/test", s.testWebhook, s.appOnly)

	// The Connect page and what it asks about its session.
	get("/connect/session", s.getSession, s.sessionOnly)
	get("/connect", s.connectPage)
	get("/connect/assets/:file", s.connectAsset)
	get("/connect/sdk.js", s.connectSDK)
	get("/connect/sdk.d.ts", s.connectSDK)
}

package api

// routes is the whole API on one screen. Authentication is per route, so
// routing answers first: an unknown path is 404 and a wrong method 405 for
// anyone, with or without a key.
func (s *Server) routes() {
	e := s.echo
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/openapi.yaml", s.openapi)

	// The app's backend (API key) or an end user's browser (connect session,
	// limited to that end user's connections).
	e.POST("/connections", s.createConnection, s.appOrSession)
	e.GET("/connections", s.listConnections, s.appOrSession)
	e.GET("/connections/:id", s.getConnection, s.appOrSession)
	e.DELETE("/connections/:id", s.deleteConnection, s.appOrSession)
	e.POST("/connections/:id/verify", s.verifyConnection, s.appOrSession)

	// The app's backend only.
	e.GET("/connections/:id/credentials", s.getCredentials, s.appOnly)
	e.POST("/connect/sessions", s.createSession, s.appOnly)
	e.DELETE("/connect/sessions/:id", s.deleteSession, s.appOnly)
	e.GET("/webhooks/deliveries", s.listDeliveries, s.appOnly)
	e.POST("/webhooks/deliveries/:id/retry", s.retryDelivery, s.appOnly)
	e.POST("/webhooks/test", s.testWebhook, s.appOnly)

	// The Connect page and what it asks about its session.
	e.GET("/connect/session", s.getSession, s.sessionOnly)
	e.GET("/connect", s.connectPage)
	e.GET("/connect/assets/:file", s.connectAsset)
	e.GET("/connect/sdk.js", s.connectSDK)
	e.GET("/connect/sdk.d.ts", s.connectSDK)
}

package api

// routes is the whole API on one screen. Authentication is per route, so
// routing answers first: an unknown path is 404 and a wrong method 405 for
// anyone, with or without a key.
func (s *Server) routes() {
	e := s.echo
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/openapi.yaml", s.openapi)

	key := s.requireAPIKey
	e.POST("/connections", s.createConnection, key)
	e.GET("/connections", s.listConnections, key)
	e.GET("/connections/:id", s.getConnection, key)
	e.DELETE("/connections/:id", s.deleteConnection, key)
	e.POST("/connections/:id/verify", s.verifyConnection, key)
	e.GET("/connections/:id/credentials", s.getCredentials, key)
}

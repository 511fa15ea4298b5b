// Package mmconnect holds what belongs to the whole project rather than to
// one layer: the API contract, embedded so the binary serves the exact file
// its tests hold it to.
package mmconnect

import (
	"bytes"
	_ "embed"
)

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns a copy of openapi.yaml.
func OpenAPI() []byte { return bytes.Clone(openAPI) }

// Package migrations holds the versioned schema, written once in SQL that
// both SQLite and PostgreSQL accept, and applied by goose; what only one
// of them needs is a Go migration (Go).
package migrations

import "embed"

// FS is every migration, named NNNNN_what.sql.
//
//go:embed *.sql
var FS embed.FS

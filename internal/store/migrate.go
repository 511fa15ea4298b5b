package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/mmconnect/mmconnect/internal/logging"
	"github.com/mmconnect/mmconnect/internal/store/migrations"
)

// ErrSchemaTooNew: the database was migrated by a newer mmconnect; this one
// must not run against it.
type ErrSchemaTooNew struct{ Database, Known int64 }

func (e *ErrSchemaTooNew) Error() string {
	return fmt.Sprintf("database schema is version %d but this mmconnect knows only up to %d: upgrade mmconnect", e.Database, e.Known)
}

// migrate applies pending migrations. locker, when given, is a database
// lock held on one connection so that replicas starting together apply
// each migration once.
func migrate(ctx context.Context, dialect goose.Dialect, db *sql.DB, locker lock.SessionLocker, log *slog.Logger) error {
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true),
		goose.WithGoMigrations(migrations.Go(dialect == goose.DialectPostgres)...)}
	if locker != nil {
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(dialect, db, migrations.FS, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	sources := p.ListSources()
	known := sources[len(sources)-1].Version
	if current > known {
		return &ErrSchemaTooNew{Database: current, Known: known}
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	for _, r := range results {
		name := r.Source.Path
		if name == "" {
			name = migrations.GoName(r.Source.Version)
		}
		log.LogAttrs(ctx, slog.LevelInfo, "migration applied", slog.Int64("version", r.Source.Version),
			slog.String("file", name), logging.Millis("took", r.Duration))
	}
	return nil
}

// Package migrations holds distcache's PostgreSQL schema as golang-migrate SQL
// files embedded in the binary: the outbox and its capture trigger (in a core
// service's database) and the control-plane's projection registry.
//
// Services apply them at start with Up; `make migrate` runs the cmd/migrate
// CLI. Progress is kept in the table distcache_schema_migrations (not
// golang-migrate's default schema_migrations) so a core service's own
// golang-migrate history in the same database is left alone.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/golang-migrate/migrate/v4/source/iofs"
)

// FS holds the migration files: NNNNNN_name.up.sql and NNNNNN_name.down.sql.
//
//go:embed *.sql
var FS embed.FS

// LatestVersion is the version Up migrates to (the highest file number).
const LatestVersion = 5

// MigrationsTable is where golang-migrate records the applied version.
const MigrationsTable = "distcache_schema_migrations"

// ErrBadDatabaseURL is returned for a database URL that is not a
// postgres://, postgresql:// or pgx5:// URL.
var ErrBadDatabaseURL = errors.New("bad database URL")

// Source returns FS as a golang-migrate source driver.
func Source() (source.Driver, error) {
	d, err := iofs.New(FS, ".")
	if err != nil {
		return nil, fmt.Errorf("open embedded migrations: %w", err)
	}
	return d, nil
}

// Up applies every migration not yet applied. Being up to date is not an
// error. Concurrent callers are serialised by golang-migrate's advisory lock.
func Up(ctx context.Context, databaseURL string) error {
	return run(ctx, databaseURL, "up", func(m *migrate.Migrate) error { return m.Up() })
}

// Down reverts every applied migration, all the way down. Tables that
// attached distcache_capture() keep their data and lose only that trigger.
func Down(ctx context.Context, databaseURL string) error {
	return run(ctx, databaseURL, "down", func(m *migrate.Migrate) error { return m.Down() })
}

// Version returns the applied version (0 when none) and whether the last
// migration failed half-way (dirty).
func Version(ctx context.Context, databaseURL string) (version uint, dirty bool, err error) {
	err = run(ctx, databaseURL, "version", func(m *migrate.Migrate) error {
		version, dirty, err = m.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			return nil
		}
		return err
	})
	return version, dirty, err
}

func run(ctx context.Context, databaseURL, what string, f func(*migrate.Migrate) error) (err error) {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	u, err := DriverURL(databaseURL)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	src, err := Source()
	if err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, u)
	if err != nil {
		return fmt.Errorf("migrate %s: connect: %w", what, err)
	}
	defer func() {
		srcErr, dbErr := m.Close()
		if err == nil {
			if cerr := errors.Join(srcErr, dbErr); cerr != nil {
				err = fmt.Errorf("migrate %s: close: %w", what, cerr)
			}
		}
	}()

	// golang-migrate takes no context: stop gracefully between migrations
	// when ctx ends.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			select {
			case m.GracefulStop <- true:
			default:
			}
		case <-done:
		}
	}()

	if err := f(m); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	return nil
}

// DriverURL turns a postgres:// or postgresql:// URL into the pgx5:// URL
// golang-migrate's pgx/v5 driver expects, and selects MigrationsTable unless
// the URL sets x-migrations-table itself.
func DriverURL(databaseURL string) (string, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		// url.Error repeats the URL, which may hold a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("%w: %v", ErrBadDatabaseURL, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "postgres", "postgresql", "pgx5":
		u.Scheme = "pgx5"
	case "":
		return "", fmt.Errorf("%w: want postgres://user:pass@host:port/db, got no scheme", ErrBadDatabaseURL)
	default:
		return "", fmt.Errorf("%w: scheme %q, want postgres, postgresql or pgx5", ErrBadDatabaseURL, u.Scheme)
	}
	q := u.Query()
	if q.Get("x-migrations-table") == "" {
		q.Set("x-migrations-table", MigrationsTable)
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

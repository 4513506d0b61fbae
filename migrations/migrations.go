// Package migrations holds distcache's PostgreSQL schema as golang-migrate SQL
// files embedded in the binary, in two sets that are applied separately, each
// with its own credentials:
//
//   - Core (core/*.sql): the outbox and its capture trigger, in a core
//     service's database. The core-publisher needs it.
//   - Control (control/*.sql): the control-plane's projection registry. The
//     control-plane and the cache-producer need it.
//
// Services do not change the schema at start: they Check that the version
// they need is applied and stop with a message naming the missing migration.
// `make migrate` (locally) and the chart's pre-install/pre-upgrade Jobs (in
// Kubernetes) apply the sets with the cmd/migrate CLI; a service applies its
// set itself only when asked to (<PREFIX>_MIGRATE=true, for tests and the
// local stack).
//
// Each set keeps its progress in a table of its own (Core.Table(),
// Control.Table()), never golang-migrate's default schema_migrations, so a
// core service's own golang-migrate history in the same database is left
// alone, and both sets may share one database.
//
// # Databases migrated before the split
//
// Until the split, one sequence of five migrations was applied to every
// database, recorded in distcache_schema_migrations (LegacyTable):
// 1 outbox, 2 capture trigger, 3 registry, 4 outbox published, 5 capture
// columns. They are now core 1, core 2, control 1, core 3 and core 4, with the
// same SQL. The first Up, Down or Force of a set on a database that has
// LegacyTable but not the set's table creates the set's table at the version
// the legacy history implies: the number of the set's migrations among those
// applied (legacy version v: core min(v,2) + [v>=4] + [v>=5], control [v>=3]).
// A legacy history that is dirty at version v (migration v failed half-way)
// makes the set that owns migration v dirty at that migration's new number;
// the other set gets what completed before it. Nothing else is touched:
// LegacyTable stays (no longer written; a rollback to a release before the
// split still reads it), and so do the objects of the set a database does not
// use (the old sequence created the registry in core databases and the outbox
// in registry databases). Check and Version read the legacy history the same
// way, without writing, until the set's table exists.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
)

// FS holds the migration files of both sets: core/NNNNNN_name.up.sql,
// core/NNNNNN_name.down.sql, control/....
//
//go:embed core/*.sql control/*.sql
var FS embed.FS

// Latest versions of the sets (the highest file number of each).
const (
	LatestCoreVersion    = 5
	LatestControlVersion = 4
)

// LegacyTable is where the single migration sequence before the split kept
// its version; LegacyLatestVersion was its last migration.
const (
	LegacyTable         = "distcache_schema_migrations"
	LegacyLatestVersion = 5
)

// Set is one set of migrations with its own version table. Sets compare
// with ==.
type Set struct {
	name   string
	table  string
	latest uint
}

// The two sets.
var (
	// Core: the outbox, its capture trigger, published versions and columns;
	// in a core service's database.
	Core = Set{name: "core", table: "distcache_core_schema_migrations", latest: LatestCoreVersion}
	// Control: the projection registry; in the control-plane's database.
	Control = Set{name: "control", table: "distcache_control_schema_migrations", latest: LatestControlVersion}
)

// legacyVersions[set][i] is the version, in the single sequence before the
// split, of the set's migration i+1. Migrations added after the split (control
// 2 on) have none: a legacy history never includes them.
var legacyVersions = map[string][]uint{
	"core":    {1, 2, 4, 5},
	"control": {3},
}

// Sets returns every set, core first.
func Sets() []Set { return []Set{Core, Control} }

// ErrUnknownSet is returned by SetByName for a name that is no set's.
var ErrUnknownSet = errors.New("unknown migration set")

// SetByName returns the set called name ("core" or "control").
func SetByName(name string) (Set, error) {
	for _, s := range Sets() {
		if s.name == name {
			return s, nil
		}
	}
	return Set{}, fmt.Errorf("%w %q (want core or control)", ErrUnknownSet, name)
}

// Name is the set's name: "core" or "control"; also its directory in FS.
func (s Set) Name() string { return s.name }

// String is Name.
func (s Set) String() string { return s.name }

// Table is the table that records the set's applied version.
func (s Set) Table() string { return s.table }

// LatestVersion is the version Up migrates the set to.
func (s Set) LatestVersion() uint { return s.latest }

// Source returns the set's files as a golang-migrate source driver.
func (s Set) Source() (source.Driver, error) {
	if s.name == "" {
		return nil, fmt.Errorf("%w: the zero Set", ErrUnknownSet)
	}
	d, err := iofs.New(FS, s.name)
	if err != nil {
		return nil, fmt.Errorf("open embedded %s migrations: %w", s.name, err)
	}
	return d, nil
}

var fileName = regexp.MustCompile(`^(\d{6})_([a-z0-9_]+)\.up\.sql$`)

// MigrationName returns the name of the set's migration version, as its file
// is named without the direction: "000003_outbox_published". It is "" for a
// version the set does not have.
func (s Set) MigrationName(version uint) string {
	ents, err := fs.ReadDir(FS, s.name)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if v, _ := strconv.ParseUint(m[1], 10, 32); uint(v) == version {
			return m[1] + "_" + m[2]
		}
	}
	return ""
}

// fromLegacy is the set's version in a database whose single-sequence history
// is at version v (dirty: migration v failed half-way). See the package doc.
func (s Set) fromLegacy(v uint, dirty bool) (uint, bool, error) {
	if v > LegacyLatestVersion {
		return 0, false, fmt.Errorf("%s is at version %d, past the last version of the single sequence (%d): not a history this release knows",
			LegacyTable, v, LegacyLatestVersion)
	}
	var n uint
	for i, lv := range legacyVersions[s.name] {
		switch {
		case lv == v && dirty:
			return uint(i + 1), true, nil
		case lv <= v:
			n = uint(i + 1)
		}
	}
	return n, false, nil
}

// ErrBadDatabaseURL is returned for a database URL that is not a
// postgres://, postgresql:// or pgx5:// URL.
var ErrBadDatabaseURL = errors.New("bad database URL")

// ErrSchemaNotReady is what a SchemaError matches (errors.Is): the database
// lacks a migration of the set, or one failed half-way.
var ErrSchemaNotReady = errors.New("schema not ready")

// SchemaError says why Check refused a database: the migrations of Set after
// Version are missing, or migration Version failed half-way (Dirty).
type SchemaError struct {
	Set     string
	Version uint // the applied version (0: none)
	Want    uint // the version this build needs
	Dirty   bool
	// Missing names the migrations not applied, in order ("000003_outbox_published").
	Missing []string
	// Legacy is set when the version was read from LegacyTable.
	Legacy bool
}

func (e *SchemaError) Error() string {
	set := e.Set
	if e.Dirty {
		name := Set{name: set}.MigrationName(e.Version)
		return fmt.Sprintf("%s schema is dirty at version %d: migration %s failed half-way; repair the database by hand, "+
			"then record the last complete version (migrate -database URL force %s %d) and apply the set again",
			set, e.Version, name, set, e.Version-1)
	}
	noun := "migration"
	if len(e.Missing) > 1 {
		noun = "migrations"
	}
	have := fmt.Sprintf("at version %d", e.Version)
	if e.Version == 0 {
		have = "not migrated"
	}
	return fmt.Sprintf("%s schema %s, this build needs version %d: %s %s not applied; apply the %s set with "+
		"`make migrate` (local stack), the chart's migrate-%s Job (helm upgrade), or `migrate -database URL up %s`",
		set, have, e.Want, noun, strings.Join(e.Missing, ", "), set, set, set)
}

// Is makes a SchemaError match ErrSchemaNotReady.
func (e *SchemaError) Is(target error) bool { return target == ErrSchemaNotReady }

// Up applies every migration of set not yet applied. Being up to date is not
// an error. Concurrent callers are serialised by golang-migrate's advisory
// lock (one per set and database). A database migrated by the single sequence
// before the split is adopted first (see the package doc).
func Up(ctx context.Context, databaseURL string, set Set) error {
	return run(ctx, databaseURL, set, "up", func(m *migrate.Migrate) error { return m.Up() })
}

// Down reverts every applied migration of set, all the way down. Tables that
// attached distcache_capture() keep their data and lose only that trigger.
func Down(ctx context.Context, databaseURL string, set Set) error {
	return run(ctx, databaseURL, set, "down", func(m *migrate.Migrate) error { return m.Down() })
}

// Force records version as the set's applied version and clears the dirty
// flag, without running anything: the repair after a migration failed
// half-way and the database was fixed by hand. 0 records "none applied".
func Force(ctx context.Context, databaseURL string, set Set, version uint) error {
	if version > set.latest {
		return fmt.Errorf("migrate force %s: version %d is past the set's last (%d)", set, version, set.latest)
	}
	v := int(version)
	if version == 0 {
		v = database.NilVersion
	}
	return run(ctx, databaseURL, set, "force", func(m *migrate.Migrate) error { return m.Force(v) })
}

// Version returns the set's applied version (0 when none) and whether its
// last migration failed half-way (dirty). It only reads: it works with a
// read-only role, and on a database from before the split it reads the
// legacy history (see the package doc).
func Version(ctx context.Context, databaseURL string, set Set) (version uint, dirty bool, err error) {
	st, err := readState(ctx, databaseURL, set)
	return st.version, st.dirty, err
}

// Check returns nil when the set is applied up to the version this build
// needs (its LatestVersion; a later version, from a newer release, is
// accepted), and otherwise a *SchemaError that names the missing or failed
// migration and how to apply it. It only reads (see Version).
func Check(ctx context.Context, databaseURL string, set Set) error {
	st, err := readState(ctx, databaseURL, set)
	if err != nil {
		return err
	}
	if st.dirty {
		return &SchemaError{Set: set.name, Version: st.version, Want: set.latest, Dirty: true, Legacy: st.legacy}
	}
	if st.version >= set.latest {
		return nil
	}
	e := &SchemaError{Set: set.name, Version: st.version, Want: set.latest, Legacy: st.legacy}
	for v := st.version + 1; v <= set.latest; v++ {
		e.Missing = append(e.Missing, set.MigrationName(v))
	}
	return e
}

type state struct {
	version uint
	dirty   bool
	legacy  bool
}

func readState(ctx context.Context, databaseURL string, set Set) (state, error) {
	if set.name == "" {
		return state{}, fmt.Errorf("migrate version: %w: the zero Set", ErrUnknownSet)
	}
	conn, err := connect(ctx, databaseURL)
	if err != nil {
		return state{}, fmt.Errorf("%s schema version: %w", set, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	hasSet, hasLegacy, err := tablesPresent(ctx, conn, set)
	if err != nil {
		return state{}, fmt.Errorf("%s schema version: %w", set, err)
	}
	switch {
	case hasSet:
		v, dirty, _, err := versionRow(ctx, conn, set.table)
		if err != nil {
			return state{}, fmt.Errorf("%s schema version: %w", set, err)
		}
		return state{version: v, dirty: dirty}, nil
	case hasLegacy:
		lv, ldirty, ok, err := versionRow(ctx, conn, LegacyTable)
		if err != nil || !ok {
			return state{legacy: true}, err
		}
		v, dirty, err := set.fromLegacy(lv, ldirty)
		if err != nil {
			return state{}, fmt.Errorf("%s schema version: %w", set, err)
		}
		return state{version: v, dirty: dirty, legacy: true}, nil
	}
	return state{}, nil
}

func tablesPresent(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, set Set) (hasSet, hasLegacy bool, err error) {
	// golang-migrate keeps its table in current_schema(); so do we.
	err = q.QueryRow(ctx, `SELECT to_regclass(format('%I.%I', current_schema(), $1::text)) IS NOT NULL,
		to_regclass(format('%I.%I', current_schema(), $2::text)) IS NOT NULL`, set.table, LegacyTable).Scan(&hasSet, &hasLegacy)
	return hasSet, hasLegacy, err
}

// versionRow reads golang-migrate's single row of table; ok is false when it
// is empty (nothing applied).
func versionRow(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, table string) (version uint, dirty, ok bool, err error) {
	var v int64
	err = q.QueryRow(ctx, `SELECT version, dirty FROM `+pgx.Identifier{table}.Sanitize()+` LIMIT 1`).Scan(&v, &dirty)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, false, nil
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("read %s: %w", table, err)
	}
	if v < 0 { // golang-migrate's NilVersion (-1) after forcing none
		return 0, dirty, true, nil
	}
	return uint(v), dirty, true, nil
}

// legacyLockID serialises adoptions of a legacy history in one database.
var legacyLockID = int64(crc32.ChecksumIEEE([]byte("distcache migrations: adopt " + LegacyTable)))

// adoptLegacy creates set's version table from LegacyTable when the database
// has the latter and not the former (see the package doc).
func adoptLegacy(ctx context.Context, databaseURL string, set Set) error {
	conn, err := connect(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, legacyLockID); err != nil {
			return err
		}
		hasSet, hasLegacy, err := tablesPresent(ctx, tx, set)
		if err != nil || hasSet || !hasLegacy {
			return err
		}
		lv, ldirty, ok, err := versionRow(ctx, tx, LegacyTable)
		if err != nil || !ok {
			return err // an empty legacy table: nothing was applied, a fresh start is right
		}
		v, dirty, err := set.fromLegacy(lv, ldirty)
		if err != nil {
			return err
		}
		// golang-migrate's own table layout (database/pgx/v5 ensureVersionTable).
		if _, err := tx.Exec(ctx, `CREATE TABLE `+pgx.Identifier{set.table}.Sanitize()+
			` (version bigint not null primary key, dirty boolean not null)`); err != nil {
			return err
		}
		if v == 0 && !dirty {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+pgx.Identifier{set.table}.Sanitize()+` (version, dirty) VALUES ($1, $2)`, int64(v), dirty)
		return err
	})
}

func run(ctx context.Context, databaseURL string, set Set, what string, f func(*migrate.Migrate) error) (err error) {
	what = what + " " + set.name
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	u, err := DriverURL(databaseURL, set)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	src, err := set.Source()
	if err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	if err := adoptLegacy(ctx, databaseURL, set); err != nil {
		src.Close()
		return fmt.Errorf("migrate %s: adopt the history in %s: %w", what, LegacyTable, err)
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

// parseURL checks a postgres://, postgresql:// or pgx5:// URL without
// repeating it in errors (it may hold a password).
func parseURL(databaseURL string) (*url.URL, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: %v", ErrBadDatabaseURL, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "postgres", "postgresql", "pgx5":
	case "":
		return nil, fmt.Errorf("%w: want postgres://user:pass@host:port/db, got no scheme", ErrBadDatabaseURL)
	default:
		return nil, fmt.Errorf("%w: scheme %q, want postgres, postgresql or pgx5", ErrBadDatabaseURL, u.Scheme)
	}
	if u.Query().Has("x-migrations-table") {
		return nil, fmt.Errorf("%w: x-migrations-table is set by the migration set, not the URL", ErrBadDatabaseURL)
	}
	return u, nil
}

// DriverURL turns a postgres:// or postgresql:// URL into the pgx5:// URL
// golang-migrate's pgx/v5 driver expects, recording progress in set's Table.
// A URL that names x-migrations-table itself is refused: two sets must never
// share a table.
func DriverURL(databaseURL string, set Set) (string, error) {
	u, err := parseURL(databaseURL)
	if err != nil {
		return "", err
	}
	if set.table == "" {
		return "", fmt.Errorf("%w: the zero Set", ErrUnknownSet)
	}
	u.Scheme = "pgx5"
	q := u.Query()
	q.Set("x-migrations-table", set.table)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// connect opens a plain connection for the reads (and the adoption) that
// golang-migrate does not do: postgres:// scheme, golang-migrate's x-*
// options removed (PostgreSQL would take them for settings).
func connect(ctx context.Context, databaseURL string) (*pgx.Conn, error) {
	u, err := parseURL(databaseURL)
	if err != nil {
		return nil, err
	}
	u.Scheme = "postgres"
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "x-") {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// Files lists the set's migration files (for tests and tools), sorted.
func (s Set) Files() ([]string, error) {
	return fs.Glob(FS, path.Join(s.name, "*.sql"))
}

// Ensure is what a service does at start: with apply (its <PREFIX>_MIGRATE
// opt-in) it runs Up first; then it Checks that the set is at the version
// this build needs, and returns Check's *SchemaError when it is not.
func Ensure(ctx context.Context, databaseURL string, set Set, apply bool) error {
	if apply {
		if err := Up(ctx, databaseURL, set); err != nil {
			return err
		}
	}
	return Check(ctx, databaseURL, set)
}

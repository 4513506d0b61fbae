package migrations

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestEmbeddedFilesArePairedAndNumbered(t *testing.T) {
	t.Parallel()
	all, err := fs.Glob(FS, "*/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, set := range Sets() {
		names, err := set.Files()
		if err != nil {
			t.Fatal(err)
		}
		total += len(names)
		re := regexp.MustCompile(`^` + set.Name() + `/(\d{6})_([a-z0-9_]+)\.(up|down)\.sql$`)
		ups, downs := map[int]string{}, map[int]string{}
		for _, n := range names {
			m := re.FindStringSubmatch(n)
			if m == nil {
				t.Errorf("file %q does not match %s/NNNNNN_name.(up|down).sql", n, set)
				continue
			}
			v, _ := strconv.Atoi(m[1])
			if m[3] == "up" {
				ups[v] = m[2]
			} else {
				downs[v] = m[2]
			}
		}
		latest := int(set.LatestVersion())
		for v := 1; v <= latest; v++ {
			if ups[v] == "" || downs[v] != ups[v] {
				t.Errorf("%s version %d: up %q, down %q; want both, same name", set, v, ups[v], downs[v])
			}
			if got, want := set.MigrationName(uint(v)), fmt.Sprintf("%06d_%s", v, ups[v]); got != want {
				t.Errorf("%s.MigrationName(%d) = %q, want %q", set, v, got, want)
			}
		}
		if len(ups) != latest || len(downs) != latest {
			t.Errorf("%s: %d up and %d down files, want %d each (LatestVersion)", set, len(ups), len(downs), latest)
		}
		src, err := set.Source()
		if err != nil {
			t.Fatal(err)
		}
		first, err := src.First()
		src.Close()
		if err != nil || first != 1 {
			t.Fatalf("%s Source().First() = %d, %v, want 1", set, first, err)
		}
		if len(legacyVersions[set.Name()]) > latest {
			t.Errorf("%s: %d legacy versions for %d migrations", set, len(legacyVersions[set.Name()]), latest)
		}
	}
	if total != len(all) {
		t.Errorf("%d files in the sets, %d embedded: a file outside core/ and control/", total, len(all))
	}
	if Core.LatestVersion() != LatestCoreVersion || Control.LatestVersion() != LatestControlVersion {
		t.Error("LatestVersion and the Latest*Version constants disagree")
	}
}

// TestFromLegacy pins the rule that maps the single sequence before the split onto the sets:
// every legacy version and dirty flag, both sets.
func TestFromLegacy(t *testing.T) {
	t.Parallel()
	type sv struct {
		v     uint
		dirty bool
	}
	tests := []struct {
		legacy        uint
		dirty         bool
		core, control sv
	}{
		{0, false, sv{0, false}, sv{0, false}},
		{1, false, sv{1, false}, sv{0, false}},
		{2, false, sv{2, false}, sv{0, false}},
		{3, false, sv{2, false}, sv{1, false}},
		{4, false, sv{3, false}, sv{1, false}},
		{5, false, sv{4, false}, sv{1, false}},
		{1, true, sv{1, true}, sv{0, false}},
		{2, true, sv{2, true}, sv{0, false}},
		{3, true, sv{2, false}, sv{1, true}},
		{4, true, sv{3, true}, sv{1, false}},
		{5, true, sv{4, true}, sv{1, false}},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			set  Set
			want sv
		}{{Core, tt.core}, {Control, tt.control}} {
			v, dirty, err := c.set.fromLegacy(tt.legacy, tt.dirty)
			if err != nil || (sv{v, dirty}) != c.want {
				t.Errorf("%s.fromLegacy(%d, dirty=%v) = %d, %v, %v; want %d, %v", c.set, tt.legacy, tt.dirty, v, dirty, err, c.want.v, c.want.dirty)
			}
		}
	}
	if _, _, err := Core.fromLegacy(6, false); err == nil {
		t.Error("fromLegacy(6) accepted a version past the single sequence")
	}
}

func TestSetByName(t *testing.T) {
	t.Parallel()
	for _, s := range Sets() {
		if got, err := SetByName(s.Name()); err != nil || got.Table() != s.Table() {
			t.Errorf("SetByName(%q) = %v, %v", s.Name(), got, err)
		}
	}
	if Core.Table() == Control.Table() || Core.Table() == LegacyTable || Control.Table() == LegacyTable {
		t.Error("two sets, or a set and the legacy history, share a version table")
	}
	if _, err := SetByName("registry"); !errors.Is(err, ErrUnknownSet) {
		t.Errorf("SetByName(registry) = %v, want ErrUnknownSet", err)
	}
}

func TestDriverURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		set      Set
		wantErr  bool
	}{
		{in: "postgres://u:p@127.0.0.1:5432/db", set: Core, want: "pgx5://u:p@127.0.0.1:5432/db?x-migrations-table=distcache_core_schema_migrations"},
		{in: "postgresql://u@h/db?sslmode=disable", set: Control, want: "pgx5://u@h/db?sslmode=disable&x-migrations-table=distcache_control_schema_migrations"},
		{in: "pgx5://h/db", set: Control, want: "pgx5://h/db?x-migrations-table=distcache_control_schema_migrations"},
		{in: "pgx5://h/db?x-migrations-table=mine", set: Core, wantErr: true},
		{in: "mysql://h/db", set: Core, wantErr: true},
		{in: "host=h dbname=db", set: Core, wantErr: true},
		{in: "postgres://u:secret@h:bad/db", set: Core, wantErr: true},
	}
	for _, tt := range tests {
		got, err := DriverURL(tt.in, tt.set)
		if tt.wantErr {
			if !errors.Is(err, ErrBadDatabaseURL) {
				t.Errorf("DriverURL(%q) = %q, %v, want ErrBadDatabaseURL", tt.in, got, err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("DriverURL error %q leaks the password", err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("DriverURL(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := DriverURL("postgres://h/db", Set{}); !errors.Is(err, ErrUnknownSet) {
		t.Errorf("DriverURL with the zero Set = %v, want ErrUnknownSet", err)
	}
}

func TestUpRejectsBadURLAndCanceledContext(t *testing.T) {
	t.Parallel()
	if err := Up(context.Background(), "mysql://h/db", Core); !errors.Is(err, ErrBadDatabaseURL) {
		t.Errorf("Up(mysql URL) = %v, want ErrBadDatabaseURL", err)
	}
	if err := Check(context.Background(), "mysql://h/db", Core); !errors.Is(err, ErrBadDatabaseURL) {
		t.Errorf("Check(mysql URL) = %v, want ErrBadDatabaseURL", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Up(ctx, "postgres://h/db", Control); !errors.Is(err, context.Canceled) {
		t.Errorf("Up(canceled ctx) = %v, want context.Canceled", err)
	}
}

func TestSchemaErrorMessage(t *testing.T) {
	t.Parallel()
	e := &SchemaError{Set: "core", Version: 2, Want: 4, Missing: []string{"000003_outbox_published", "000004_capture_columns"}}
	for _, want := range []string{"core schema at version 2", "needs version 4", "000003_outbox_published, 000004_capture_columns", "make migrate", "migrate-core Job", "up core"} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("%q lacks %q", e.Error(), want)
		}
	}
	d := &SchemaError{Set: "core", Version: 3, Want: 4, Dirty: true}
	for _, want := range []string{"dirty at version 3", "000003_outbox_published failed half-way", "force core 2"} {
		if !strings.Contains(d.Error(), want) {
			t.Errorf("%q lacks %q", d.Error(), want)
		}
	}
	if !errors.Is(e, ErrSchemaNotReady) || !errors.Is(d, ErrSchemaNotReady) {
		t.Error("SchemaError does not match ErrSchemaNotReady")
	}
}

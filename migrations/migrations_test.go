package migrations

import (
	"context"
	"errors"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestEmbeddedFilesArePairedAndNumbered(t *testing.T) {
	t.Parallel()
	names, err := fs.Glob(FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^(\d{6})_([a-z0-9_]+)\.(up|down)\.sql$`)
	ups, downs := map[int]string{}, map[int]string{}
	for _, n := range names {
		m := re.FindStringSubmatch(n)
		if m == nil {
			t.Errorf("file %q does not match NNNNNN_name.(up|down).sql", n)
			continue
		}
		v, _ := strconv.Atoi(m[1])
		if m[3] == "up" {
			ups[v] = m[2]
		} else {
			downs[v] = m[2]
		}
	}
	for v := 1; v <= LatestVersion; v++ {
		if ups[v] == "" || downs[v] != ups[v] {
			t.Errorf("version %d: up %q, down %q; want both, same name", v, ups[v], downs[v])
		}
	}
	if len(ups) != LatestVersion || len(downs) != LatestVersion {
		t.Errorf("%d up and %d down files, want %d each (LatestVersion)", len(ups), len(downs), LatestVersion)
	}
	src, err := Source()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, err := src.First()
	if err != nil || first != 1 {
		t.Fatalf("Source().First() = %d, %v, want 1", first, err)
	}
}

func TestDriverURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "postgres://u:p@127.0.0.1:5432/db", want: "pgx5://u:p@127.0.0.1:5432/db?x-migrations-table=distcache_schema_migrations"},
		{in: "postgresql://u@h/db?sslmode=disable", want: "pgx5://u@h/db?sslmode=disable&x-migrations-table=distcache_schema_migrations"},
		{in: "pgx5://h/db?x-migrations-table=mine", want: "pgx5://h/db?x-migrations-table=mine"},
		{in: "mysql://h/db", wantErr: true},
		{in: "host=h dbname=db", wantErr: true},
		{in: "postgres://u:secret@h:bad/db", wantErr: true},
	}
	for _, tt := range tests {
		got, err := DriverURL(tt.in)
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
}

func TestUpRejectsBadURLAndCanceledContext(t *testing.T) {
	t.Parallel()
	if err := Up(context.Background(), "mysql://h/db"); !errors.Is(err, ErrBadDatabaseURL) {
		t.Errorf("Up(mysql URL) = %v, want ErrBadDatabaseURL", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Up(ctx, "postgres://h/db"); !errors.Is(err, context.Canceled) {
		t.Errorf("Up(canceled ctx) = %v, want context.Canceled", err)
	}
}

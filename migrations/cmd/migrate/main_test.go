package main

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestRunRejectsBadInvocations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		wantIn string
	}{
		{"no command", nil, map[string]string{"DATABASE_URL": "postgres://h/db"}, "usage"},
		{"no set", []string{"up"}, map[string]string{"DATABASE_URL": "postgres://h/db"}, "usage"},
		{"two commands", []string{"up", "down", "core"}, map[string]string{"DATABASE_URL": "postgres://h/db"}, "usage"},
		{"unknown command", []string{"sideways", "core"}, map[string]string{"DATABASE_URL": "postgres://h/db"}, `unknown command "sideways"`},
		{"unknown set", []string{"up", "registry"}, map[string]string{"DATABASE_URL": "postgres://h/db"}, `unknown migration set "registry"`},
		{"force without version", []string{"force", "core"}, map[string]string{"DATABASE_URL": "postgres://h/db"}, "usage"},
		{"force past the last", []string{"force", "control", strconv.Itoa(migrations.LatestControlVersion + 1)}, map[string]string{"DATABASE_URL": "postgres://h/db"},
			"want 0.." + strconv.Itoa(migrations.LatestControlVersion)},
		{"no database", []string{"up", "core"}, nil, "DATABASE_URL: not set"},
		{"bad scheme", []string{"up", "core"}, map[string]string{"DATABASE_URL": "mysql://u:pw@h/db"}, "DATABASE_URL: bad database URL"},
		{"bad flag", []string{"-nope", "up", "core"}, nil, "usage"},
	}
	for _, tt := range tests {
		var log bytes.Buffer
		err := run(context.Background(), tt.args, env(tt.env), &log)
		if err == nil || !strings.Contains(err.Error(), tt.wantIn) || strings.Contains(err.Error(), "pw@") {
			t.Errorf("%s: run(%q) = %v, want error containing %q", tt.name, tt.args, err, tt.wantIn)
		}
	}
}

// TestRunUpCheckDown runs the CLI as make migrate and the chart's Jobs do: up each set on its own
// database, check (fails before up, passes after), version, down.
func TestRunUpCheckDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, set := range migrations.Sets() {
		url := devstacktest.Database(t)
		var log bytes.Buffer
		e := env(map[string]string{"DATABASE_URL": url})
		if err := run(ctx, []string{"check", set.Name()}, e, &log); !errors.Is(err, migrations.ErrSchemaNotReady) {
			t.Fatalf("check %s before up = %v, want ErrSchemaNotReady", set, err)
		}
		if err := run(ctx, []string{"up", set.Name()}, e, &log); err != nil {
			t.Fatalf("run up %s: %v\n%s", set, err, log.String())
		}
		if err := run(ctx, []string{"check", set.Name()}, e, &log); err != nil {
			t.Fatalf("check %s after up: %v", set, err)
		}
		for _, other := range migrations.Sets() {
			v, _, err := migrations.Version(ctx, url, other)
			want := uint(0)
			if other == set {
				want = set.LatestVersion()
			}
			if err != nil || v != want {
				t.Fatalf("after up %s: %s version %d, %v; want %d", set, other, v, err, want)
			}
		}
		// The flag wins over the environment.
		if err := run(ctx, []string{"-database", url, "down", set.Name()}, env(map[string]string{"DATABASE_URL": "postgres://nowhere/x"}), &log); err != nil {
			t.Fatalf("run down %s: %v\n%s", set, err, log.String())
		}
		if v, _, err := migrations.Version(ctx, url, set); err != nil || v != 0 {
			t.Fatalf("after down: %s version %d, %v; want 0", set, v, err)
		}
		if err := run(ctx, []string{"version", set.Name()}, e, &log); err != nil {
			t.Fatalf("run version: %v", err)
		}
		if strings.Contains(log.String(), "distcache@") || !strings.Contains(log.String(), "version=0") || !strings.Contains(log.String(), "set="+set.Name()) {
			t.Fatalf("log leaks the password or lacks the set or version:\n%s", log.String())
		}
	}
}

func TestMaskPassword(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db":       "postgres://u:xxxxx@h:5432/db",
		"postgres://u@h/db":                   "postgres://u@h/db",
		"postgres://h/db?password=secret&a=b": "postgres://h/db?a=b&password=xxxxx",
	} {
		if got := maskPassword(in); got != want {
			t.Errorf("maskPassword(%q) = %q, want %q", in, got, want)
		}
	}
}

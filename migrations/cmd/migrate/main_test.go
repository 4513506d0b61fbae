package main

import (
	"bytes"
	"context"
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
		{"two commands", []string{"up", "down"}, map[string]string{"DATABASE_URL": "postgres://h/db"}, "usage"},
		{"unknown command", []string{"sideways"}, map[string]string{"DATABASE_URL": "postgres://h/db"}, `unknown command "sideways"`},
		{"no database", []string{"up"}, nil, "DATABASE_URL: not set"},
		{"bad scheme", []string{"up"}, map[string]string{"DATABASE_URL": "mysql://u:pw@h/db"}, "DATABASE_URL: bad database URL"},
		{"bad flag", []string{"-nope", "up"}, nil, "usage"},
	}
	for _, tt := range tests {
		var log bytes.Buffer
		err := run(context.Background(), tt.args, env(tt.env), &log)
		if err == nil || !strings.Contains(err.Error(), tt.wantIn) || strings.Contains(err.Error(), "pw@") {
			t.Errorf("%s: run(%q) = %v, want error containing %q", tt.name, tt.args, err, tt.wantIn)
		}
	}
}

func TestRunUpVersionDown(t *testing.T) {
	t.Parallel()
	url := devstacktest.Database(t)
	ctx := context.Background()
	var log bytes.Buffer
	if err := run(ctx, []string{"up"}, env(map[string]string{"DATABASE_URL": url}), &log); err != nil {
		t.Fatalf("run up: %v\n%s", err, log.String())
	}
	if v, _, err := migrations.Version(ctx, url); err != nil || v != migrations.LatestVersion {
		t.Fatalf("after up: version %d, %v; want %d", v, err, migrations.LatestVersion)
	}
	// The flag wins over the environment.
	if err := run(ctx, []string{"-database", url, "down"}, env(map[string]string{"DATABASE_URL": "postgres://nowhere/x"}), &log); err != nil {
		t.Fatalf("run down: %v\n%s", err, log.String())
	}
	if v, _, err := migrations.Version(ctx, url); err != nil || v != 0 {
		t.Fatalf("after down: version %d, %v; want 0", v, err)
	}
	if err := run(ctx, []string{"version"}, env(map[string]string{"DATABASE_URL": url}), &log); err != nil {
		t.Fatalf("run version: %v", err)
	}
	if strings.Contains(log.String(), "distcache@") || !strings.Contains(log.String(), "version=0") {
		t.Fatalf("log leaks the password or lacks the version:\n%s", log.String())
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

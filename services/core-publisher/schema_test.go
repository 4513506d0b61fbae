package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestStartChecksOutboxSchema: the core-publisher runs no DDL on the core database at start. On a
// database without the outbox it stops before doing anything, naming the missing migrations and
// the ways to apply them, and creates nothing; on one at core version 2 it names only the two
// missing migrations; with PUBLISHER_MIGRATE=true it applies the core set and serves.
func TestStartChecksOutboxSchema(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	env := serviceEnv(t, dbURL, k.Addr)
	getenv := func(k string) string { return env[k] }
	err := run(ctx, nil, getenv, io.Discard, io.Discard)
	for _, want := range []string{"outbox schema", "PUBLISHER_DATABASE_URL", "000001_outbox", "000005_capture_statement", "make migrate", "migrate-core Job", "PUBLISHER_MIGRATE=true"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("run on an unmigrated core database = %v, want an error containing %q", err, want)
		}
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'distcache%'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the refused start left %d distcache tables (%v), want none", n, err)
	}

	// A core database two migrations behind.
	if err := migrations.Up(ctx, dbURL, migrations.Core); err != nil {
		t.Fatal(err)
	}
	if err := migrations.Force(ctx, dbURL, migrations.Core, 2); err != nil {
		t.Fatal(err)
	}
	err = run(ctx, []string{"models"}, getenv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "000003_outbox_published, 000004_capture_columns, 000005_capture_statement") || strings.Contains(err.Error(), "000002") {
		t.Fatalf("run at core version 2 = %v, want 000003 to 000005 named, nothing else", err)
	}

	// The opt-in: the service applies the set itself.
	fresh := devstacktest.Database(t)
	env = serviceEnv(t, fresh, k.Addr, "PUBLISHER_MIGRATE", "true")
	startService(t, env)
	if err := migrations.Check(ctx, fresh, migrations.Core); err != nil {
		t.Fatalf("after a start with PUBLISHER_MIGRATE=true: %v", err)
	}
}

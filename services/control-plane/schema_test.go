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

// TestStartChecksRegistrySchema: the control-plane changes no schema at start. On a database
// without the registry it stops before serving, naming the missing migration and the ways to
// apply it, and creates nothing; with CONTROLPLANE_MIGRATE=true it applies the control set and
// serves.
func TestStartChecksRegistrySchema(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	env := serviceEnv(dbURL, r.Addr, freeAddr(t), // nothing listens there: reads only
		"CONTROLPLANE_MODELS", "users=id,email",
	)
	err := run(ctx, nil, func(k string) string { return env[k] }, io.Discard)
	for _, want := range []string{"registry schema", "CONTROLPLANE_DATABASE_URL", "000001_registry", "make migrate", "migrate-control Job", "CONTROLPLANE_MIGRATE=true"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("run on an unmigrated registry = %v, want an error containing %q", err, want)
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

	env["CONTROLPLANE_MIGRATE"] = "true"
	_, logs, stop := startService(ctx, t, env)
	if err := migrations.Check(ctx, dbURL, migrations.Control); err != nil {
		t.Fatalf("after a start with CONTROLPLANE_MIGRATE=true: %v\n%s", err, logs)
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
}

package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestStartChecksRegistrySchema: the producer changes no schema at start. On a registry database
// without the control set it stops, naming the missing migration and the ways to apply it; with
// PRODUCER_MIGRATE=true it applies the set and goes on (here to the next check, which refuses an
// evicting Redis). A registry that does not answer is not a refusal: TestRunRefusesEvictingRedis
// starts on one and reaches the Redis check.
func TestStartChecksRegistrySchema(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PRODUCER_DATABASE_URL": dbURL, "PRODUCER_REDIS_ADDRS": r.Addr,
		"PRODUCER_KAFKA_BROKERS": "127.0.0.1:1", "PRODUCER_HTTP_ADDR": freeAddr(t),
	}
	getenv := func(k string) string { return env[k] }
	err := run(ctx, nil, getenv, io.Discard)
	for _, want := range []string{"registry schema", "PRODUCER_DATABASE_URL", "000001_registry", "make migrate", "PRODUCER_MIGRATE=true"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("run on an unmigrated registry = %v, want an error containing %q", err, want)
		}
	}
	if v, _, err := migrations.Version(ctx, dbURL, migrations.Control); err != nil || v != 0 {
		t.Fatalf("the refused start left the control set at version %d (%v), want 0", v, err)
	}

	env["PRODUCER_MIGRATE"] = "true"
	err = run(ctx, nil, getenv, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "maxmemory-policy allkeys-lru") {
		t.Fatalf("run with PRODUCER_MIGRATE=true = %v, want it past the schema, refused at the Redis check", err)
	}
	if err := migrations.Check(ctx, dbURL, migrations.Control); err != nil {
		t.Fatalf("after a start with PRODUCER_MIGRATE=true: %v", err)
	}
}

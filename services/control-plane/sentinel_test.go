package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
)

// TestControlPlaneFollowsSentinelFailover (issue #15 §2): the control-plane finds its Redis through
// three sentinels (CONTROLPLANE_REDIS_SENTINEL_*). Its pointer reconciler restores a live
// projection's pointer; the primary is killed with SIGKILL and the sentinels promote the replica;
// the pointer, deleted on the promoted replica, is restored there by the reconciler, and the REST
// API and /readyz keep answering. The time from the promotion to the restored pointer is logged.
func TestControlPlaneFollowsSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	if err := migrations.Up(ctx, dbURL, migrations.Control); err != nil {
		t.Fatal(err)
	}
	const master = "control-failover"
	primary, replica, sentinels := devstacktest.RedisSentinels(t, master, 3)
	addrs := make([]string, len(sentinels))
	for i, s := range sentinels {
		addrs[i] = s.Addr
	}
	clients, err := distcache.RedisConfig{SentinelMaster: master, SentinelAddrs: addrs}.NewClients()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = clients.Close() })
	pub, err := distcache.NewPublisher(clients.Primary)
	if err != nil {
		t.Fatal(err)
	}

	// A live projection in the registry, whose pointer Redis does not hold yet.
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := registry.New(pool)
	def := projection.Definition{Name: "failover_users", Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"}}
	if err := reg.CreateProjection(ctx, def); err != nil {
		t.Fatal(err)
	}
	gen, _, err := reg.AllocateGeneration(ctx, def, "wf-1")
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	if err := reg.SetState(ctx, def.Name, gen, workflows.StateTailing, &zero); err != nil {
		t.Fatal(err)
	}
	// The cutover as the pointer workflow does it, on the registry only: Redis has no pointer.
	if _, _, err := reg.Cutover(ctx, def.Name, gen, false, func(context.Context, string, int64) error { return nil }); err != nil {
		t.Fatal(err)
	}

	env := serviceEnv(dbURL, "", devstacktest.Temporal(t).HostPort,
		"CONTROLPLANE_REDIS_SENTINEL_MASTER", master, "CONTROLPLANE_REDIS_SENTINEL_ADDRS", strings.Join(addrs, ","),
		"CONTROLPLANE_POINTER_RECONCILE_INTERVAL", "300ms")
	delete(env, "CONTROLPLANE_REDIS_ADDRS")
	l, logs, stop := startService(ctx, t, env)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	pointerIs := func(want int64) bool {
		g, err := pub.CurrentGeneration(ctx, def.Name)
		return err == nil && g == want
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool { return pointerIs(gen) }, "the reconciler stores the pointer")

	killed := time.Now()
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		a, err := sentinels[0].MasterAddr(ctx)
		return err == nil && a == replica.Addr
	}, "the sentinels promote the replica %s", replica.Addr)
	promoted := time.Now()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		return clients.Primary.Del(ctx, distcache.PointerKey(def.Name)).Err() == nil
	}, "the pointer is deleted on the promoted replica")
	devstacktest.Eventually(t, 30*time.Second, func() bool { return pointerIs(gen) }, "the reconciler restores the pointer on the promoted replica")
	t.Logf("primary killed; promoted after %v; the pointer deleted on the new primary was restored %v after the promotion",
		promoted.Sub(killed).Round(10*time.Millisecond), time.Since(promoted).Round(10*time.Millisecond))

	c := restClient{t: t, base: "http://" + l.http.Addr().String()}
	if code, body := c.call("GET", "/v1/projections/"+def.Name+"/status", nil); code != http.StatusOK {
		t.Errorf("GET status after the failover: %d %v\n%s", code, body, logs)
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get(c.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "/readyz answers 200 after the failover")
}

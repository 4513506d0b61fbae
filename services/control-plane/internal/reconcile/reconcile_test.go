package reconcile_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/control-plane/internal/reconcile"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows/registry"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// TestReconcilerRestoresLostPointers, on a real registry (PostgreSQL) and Redis: a live
// projection's pointer deleted (as a Redis that lost its data would) or overwritten with another
// generation is put back by the reconciler within a few intervals, counted in the metric; an edge
// following the projection keeps answering from generation 1 while the pointer is gone, and
// answers from it again once a pointer that named another generation is put back.
func TestReconcilerRestoresLostPointers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := devstacktest.Database(t)
	if err := migrations.Up(ctx, url, migrations.Control); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := registry.New(pool)
	r := devstacktest.Redis(t)
	rdb := r.Client()
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	const name = "users_by_email"
	d := projection.Definition{Name: name, Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"}}
	if err := store.CreateProjection(ctx, d); err != nil {
		t.Fatal(err)
	}
	gen, _, err := store.AllocateGeneration(ctx, d, "wf")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetState(ctx, name, gen, registry.StateTailing, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.SetGen(ctx, name, gen, "a@x.io", []byte(`{"id":1}`), 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Cutover(ctx, name, gen, false, pub.Cutover); err != nil {
		t.Fatal(err)
	}
	edge, err := distcache.New(ctx, distcache.WithAddrs(r.Addr), distcache.WithProjections(name))
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close(context.Background())

	restores := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "restores_total"}, []string{"projection"})
	rec := &reconcile.Reconciler{Registry: store, Pointer: pub, Interval: 50 * time.Millisecond, Restores: restores}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { rec.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()

	for i, damage := range []func() error{
		func() error { return rdb.Del(ctx, distcache.PointerKey(name)).Err() },
		func() error { return rdb.Set(ctx, distcache.PointerKey(name), "99", 0).Err() },
		func() error { return rdb.FlushAll(ctx).Err() },
	} {
		if err := damage(); err != nil {
			t.Fatal(err)
		}
		// The pointer is back once the swap ran; the counter once the registry transaction
		// committed, a moment later.
		devstacktest.Eventually(t, 10*time.Second, func() bool {
			g, err := pub.CurrentGeneration(ctx, name)
			return err == nil && g == gen && testutil.ToFloat64(restores.WithLabelValues(name)) >= float64(i+1)
		}, "pointer restored to generation %d and counted (damage %d)", gen, i)
		if got := testutil.ToFloat64(restores.WithLabelValues(name)); got != float64(i+1) {
			t.Errorf("restores after damage %d: got %v, want %d", i, got, i+1)
		}
		if i == 1 {
			// A pointer naming another generation is followed by an edge that reads it before
			// the reconciler puts it back (generation 99 has no keys); the restore's cutover
			// event brings the edge back to generation 1 a moment after the pointer.
			devstacktest.Eventually(t, 10*time.Second, func() bool {
				v, err := edge.Get(ctx, name, "a@x.io")
				return err == nil && string(v) == `{"id":1}`
			}, "edge answers from generation %d again after damage %d", gen, i)
			continue
		}
		// A pointer that is gone is a loss, not a delete: the edge serves what it holds.
		if v, err := edge.Get(ctx, name, "a@x.io"); err != nil || string(v) != `{"id":1}` {
			t.Errorf("edge after damage %d: %q, %v; want the held value", i, v, err)
		}
	}
	if n := rec.Pass(ctx); n != 0 {
		t.Errorf("a pass with the pointer right restored %d, want 0", n)
	}
}

package registrywatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/cache-producer/internal/registrywatch"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// TestWatcherFollowsRegistry checks that the watcher lists the generations
// in tailing/live/retiring with their definition snapshots and the ended
// ones apart, and that a change in the registry reaches Apply through
// NOTIFY (the periodic reload is an hour away), including a changed
// definition in a new generation.
func TestWatcherFollowsRegistry(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
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
	reg := registry.New(pool)
	def := projection.Definition{Name: "orgs_by_slug", Model: "orgs", KeyTemplate: "{slug}", Fields: []string{"id", "slug"}}
	if err := reg.CreateProjection(ctx, def); err != nil {
		t.Fatal(err)
	}
	g1, _, err := reg.AllocateGeneration(ctx, def, "wf1")
	if err != nil {
		t.Fatal(err)
	}
	off := int64(7)
	if err := reg.SetState(ctx, def.Name, g1, workflows.StateLive, &off); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var last registrywatch.Snapshot
	loads := 0
	w := &registrywatch.Watcher{Pool: pool, Interval: time.Hour, Apply: func(_ context.Context, s registrywatch.Snapshot) {
		mu.Lock()
		defer mu.Unlock()
		last, loads = s, loads+1
	}}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = w.Run(ctx)
	}()
	defer func() { // before pool.Close, which waits for the LISTEN connection
		cancel()
		<-stopped
	}()
	snapshot := func() (registrywatch.Snapshot, int) {
		mu.Lock()
		defer mu.Unlock()
		return last, loads
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool { _, n := snapshot(); return n >= 1 }, "first load")
	s, _ := snapshot()
	if len(s.Active) != 1 || s.Active[0].Generation != g1 || s.Active[0].Offset != 7 || !s.Active[0].Definition.Equal(def) {
		t.Fatalf("first snapshot = %+v, want generation %d live at offset 7 with its definition", s, g1)
	}

	// A new definition in a new generation, then the old one retired.
	def2 := def
	def2.Fields = []string{"id", "slug", "name"}
	g2, _, err := reg.AllocateGeneration(ctx, def2, "wf2")
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.SetState(ctx, def.Name, g2, workflows.StateTailing, &off); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetState(ctx, def.Name, g1, workflows.StateRetired, nil); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		s, _ := snapshot()
		return len(s.Active) == 1 && s.Active[0].Generation == g2 && len(s.Ended) == 1 && s.Ended[0].Generation == g1
	}, "snapshot with generation %d tailing and %d ended", g2, g1)
	s, _ = snapshot()
	if !s.Active[0].Definition.Equal(def2) || s.Active[0].State != workflows.StateTailing {
		t.Errorf("active = %+v, want the new definition in state tailing", s.Active[0])
	}
}

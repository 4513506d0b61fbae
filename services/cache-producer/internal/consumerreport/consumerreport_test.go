package consumerreport_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/cache-producer/internal/consumerreport"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows/registry"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

type source struct {
	mu  sync.Mutex
	sts []fanout.Status
}

func (s *source) Statuses() []fanout.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fanout.Status(nil), s.sts...)
}

func (s *source) set(sts ...fanout.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sts = sts
}

// TestReporter: on a real registry, the consumers' statuses land as rows at once, every interval
// again (reported_at moves while nothing else changes), and a change (the position, the newest
// change, dead letters) shows at the next report.
func TestReporter(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := devstacktest.Database(t)
	if err := migrations.Up(ctx, url, migrations.Control); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	reg := registry.New(pool)
	d := projection.Definition{Name: "fresh", Model: "users", KeyTemplate: "{email}", Fields: []string{"email"}}
	if err := reg.CreateProjection(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.AllocateGeneration(ctx, d, "wf"); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetState(ctx, "fresh", 1, registry.StateLive, nil); err != nil {
		t.Fatal(err)
	}

	newest := time.Now().Add(-time.Second).UTC().Truncate(time.Microsecond)
	st := fanout.Status{Projection: "fresh", Generation: 1, State: "live", Owner: "producer-0", Next: 10, HighWatermark: 12,
		NewestSourceTime: newest}
	src := &source{}
	src.set(st)
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&consumerreport.Reporter{Source: src, Sink: reg, Interval: 50 * time.Millisecond}).Run(ctx)
	}()
	var first registry.Consumer
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		cs, err := reg.Consumers(ctx, "fresh")
		first = cs[1]
		return err == nil && first.Owner == "producer-0"
	}, "the first report")
	if first.Lag() != 2 || !first.NewestSourceTime.Equal(newest) || first.DeadLettersLastHour != 0 {
		t.Errorf("first report = %+v, want lag 2, newest %v, no dead letters", first, newest)
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		cs, err := reg.Consumers(ctx, "fresh")
		return err == nil && cs[1].ReportedAt.After(first.ReportedAt)
	}, "reported_at moves with nothing else changed")

	st.Next, st.NewestSourceTime, st.DeadLettersLastHour = 12, newest.Add(time.Second), 3
	src.set(st)
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		c := func() registry.Consumer { cs, _ := reg.Consumers(ctx, "fresh"); return cs[1] }()
		return c.Lag() == 0 && c.NewestSourceTime.Equal(st.NewestSourceTime) && c.DeadLettersLastHour == 3
	}, "the new position, newest change and dead letters reported")
	cancel()
	<-done
}

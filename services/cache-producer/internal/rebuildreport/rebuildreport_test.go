package rebuildreport_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/rebuildreport"
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

type sink struct {
	mu    sync.Mutex
	calls [][]registry.RebuildReport
	fail  bool
	ok    int // calls that succeeded
}

func (s *sink) ReportRebuilds(_ context.Context, r []registry.RebuildReport) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, r)
	if s.fail {
		return 0, errors.New("registry down")
	}
	s.ok++
	return int64(len(r)), nil
}

func (s *sink) last() (int, []registry.RebuildReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) == 0 {
		return 0, nil
	}
	return len(s.calls), s.calls[len(s.calls)-1]
}

// TestReporter: the consumers' rebuilds reach the registry at the first look, then only when they
// change (a rebuild begins with reason data_loss, ends) or every Refresh; a report that failed is
// sent again at the next look.
func TestReporter(t *testing.T) {
	t.Parallel()
	src := &source{}
	since := time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC)
	live := fanout.Status{Projection: "p", Generation: 2, State: "live"}
	src.set(live)
	snk := &sink{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&rebuildreport.Reporter{Source: src, Sink: snk, Interval: 10 * time.Millisecond, Refresh: time.Hour}).Run(ctx)
	}()
	devstacktest.Eventually(t, 5*time.Second, func() bool { n, _ := snk.last(); return n == 1 }, "the first report")
	if _, r := snk.last(); len(r) != 1 || r[0].Rebuild != nil {
		t.Errorf("first report = %+v, want generation 2 without a rebuild", r)
	}
	time.Sleep(100 * time.Millisecond) // ten looks: nothing changed, nothing may be sent
	if n, _ := snk.last(); n != 1 {
		t.Errorf("%d reports without a change, want 1", n)
	}

	rebuilding := live
	rebuilding.Rebuild = &fanout.RebuildStatus{Reason: "data_loss", Detail: "data loss: p/g2: its offset is gone", Since: since}
	snk.mu.Lock()
	snk.fail = true
	snk.mu.Unlock()
	src.set(rebuilding)
	devstacktest.Eventually(t, 5*time.Second, func() bool { n, _ := snk.last(); return n >= 3 }, "the failed report is sent again")
	snk.mu.Lock()
	snk.fail = false
	snk.mu.Unlock()
	devstacktest.Eventually(t, 5*time.Second, func() bool {
		snk.mu.Lock()
		ok := snk.ok
		snk.mu.Unlock()
		_, r := snk.last()
		return ok == 2 && len(r) == 1 && r[0].Rebuild != nil && r[0].Rebuild.Reason == "data_loss" && r[0].Rebuild.Since.Equal(since.Truncate(time.Microsecond))
	}, "the rebuild reported")
	sent, _ := snk.last()
	time.Sleep(100 * time.Millisecond)
	if n, _ := snk.last(); n != sent {
		t.Errorf("%d reports after the rebuild was reported without a change, want %d", n, sent)
	}
	src.set(live)
	devstacktest.Eventually(t, 5*time.Second, func() bool { _, r := snk.last(); return len(r) == 1 && r[0].Rebuild == nil }, "the rebuild's end reported")
	cancel()
	<-done
}

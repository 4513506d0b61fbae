package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/distcache/distcache/workflows/registry"
)

// TestReportRebuilds: a cache-producer's reports of in-place rebuilds land in the generations'
// rows and Rebuilds reads them back; a report equal to the row changes nothing (no notification
// for every watcher), a report without a rebuild clears it, a generation the registry does not
// list is left out, and a generation no longer kept up to date (retired) does not show its last
// report.
func TestReportRebuilds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	const name = "rebuilt"
	if err := s.CreateProjection(ctx, def(name)); err != nil {
		t.Fatal(err)
	}
	for gen := int64(1); gen <= 2; gen++ {
		if _, _, err := s.AllocateGeneration(ctx, def(name), "wf"); err != nil {
			t.Fatal(err)
		}
		off := int64(40)
		if err := s.SetState(ctx, name, gen, registry.StateLive, &off); err != nil {
			t.Fatal(err)
		}
	}
	since := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	loss := &registry.Rebuild{Reason: "data_loss", Detail: "data loss: rebuilt/g2: its offset is gone", Since: since}
	report := func(want int64, reports ...registry.RebuildReport) {
		t.Helper()
		n, err := s.ReportRebuilds(ctx, reports)
		if err != nil || n != want {
			t.Fatalf("ReportRebuilds = %d, %v; want %d rows changed", n, err, want)
		}
	}
	report(1, registry.RebuildReport{Projection: name, Generation: 1}, registry.RebuildReport{Projection: name, Generation: 2, Rebuild: loss},
		registry.RebuildReport{Projection: name, Generation: 9, Rebuild: loss}, registry.RebuildReport{Projection: "ghost", Generation: 1, Rebuild: loss})
	got, err := s.Rebuilds(ctx, name)
	want := registry.Rebuild{Reason: loss.Reason, Detail: loss.Detail, Since: since.Truncate(time.Microsecond)}
	if err != nil || len(got) != 1 || !got[2].Since.Equal(want.Since) || got[2].Reason != want.Reason || got[2].Detail != want.Detail {
		t.Fatalf("Rebuilds = %+v, %v; want generation 2: %+v", got, err, want)
	}
	report(0, registry.RebuildReport{Projection: name, Generation: 2, Rebuild: loss}) // unchanged: no write
	report(1, registry.RebuildReport{Projection: name, Generation: 2})
	if got, err := s.Rebuilds(ctx, name); err != nil || len(got) != 0 {
		t.Fatalf("Rebuilds after the rebuild ended = %+v, %v; want none", got, err)
	}

	report(1, registry.RebuildReport{Projection: name, Generation: 1, Rebuild: loss})
	if err := s.SetState(ctx, name, 1, registry.StateRetired, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Rebuilds(ctx, name); err != nil || len(got) != 0 {
		t.Errorf("Rebuilds with the rebuilt generation retired = %+v, %v; want none", got, err)
	}
}

package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/distcache/distcache/workflows/registry"
)

// TestReportConsumers: a cache-producer's consumer reports land as one row per generation with the
// database's time, a later report (another owner, a new position) replaces it, a generation the
// registry does not list is left out, a generation no longer kept up to date (retired) is not
// shown, and a deleted projection's rows go with its generations.
func TestReportConsumers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	const name = "watched"
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
	newest := time.Date(2026, 12, 7, 7, 0, 0, 123456000, time.UTC)
	before := time.Now()
	n, err := s.ReportConsumers(ctx, []registry.ConsumerReport{
		{Projection: name, Generation: 1, Owner: "producer-a", NextOffset: 40, HighWatermark: 45, NewestSourceTime: newest, DeadLettersLastHour: 2},
		{Projection: name, Generation: 2, Owner: "producer-a", NextOffset: -1, HighWatermark: -1},
		{Projection: name, Generation: 9, Owner: "producer-a", NextOffset: 1, HighWatermark: 1},
		{Projection: "ghost", Generation: 1, Owner: "producer-a", NextOffset: 1, HighWatermark: 1},
	})
	if err != nil || n != 2 {
		t.Fatalf("ReportConsumers = %d, %v; want 2 rows written", n, err)
	}
	got, err := s.Consumers(ctx, name)
	if err != nil || len(got) != 2 {
		t.Fatalf("Consumers = %+v, %v; want generations 1 and 2", got, err)
	}
	c := got[1]
	if c.Owner != "producer-a" || c.NextOffset != 40 || c.HighWatermark != 45 || c.Lag() != 5 ||
		!c.NewestSourceTime.Equal(newest) || c.DeadLettersLastHour != 2 {
		t.Errorf("generation 1 = %+v, want owner producer-a, 40 of 45 (lag 5), newest %v, 2 dead letters", c, newest)
	}
	if c.ReportedAt.Before(before.Add(-time.Minute)) || c.ReportedAt.After(time.Now().Add(time.Minute)) {
		t.Errorf("reported_at = %v, want about now", c.ReportedAt)
	}
	if c := got[2]; !c.NewestSourceTime.IsZero() || c.Lag() != 0 {
		t.Errorf("generation 2 = %+v, want no newest change and lag 0 (position unknown)", c)
	}

	if _, err := s.ReportConsumers(ctx, []registry.ConsumerReport{
		{Projection: name, Generation: 1, Owner: "producer-b", NextOffset: 45, HighWatermark: 45, NewestSourceTime: newest.Add(time.Second)},
	}); err != nil {
		t.Fatal(err)
	}
	got, err = s.Consumers(ctx, name)
	if c := got[1]; err != nil || c.Owner != "producer-b" || c.Lag() != 0 || c.DeadLettersLastHour != 0 || !c.ReportedAt.After(got[2].ReportedAt) {
		t.Errorf("generation 1 after another owner's report = %+v, %v; want producer-b, lag 0, a later reported_at", c, err)
	}

	if err := s.SetState(ctx, name, 2, registry.StateRetired, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Consumers(ctx, name); err != nil || len(got) != 1 {
		t.Errorf("Consumers with generation 2 retired = %+v, %v; want generation 1 only", got, err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM distcache_projections WHERE name = $1`, name); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM distcache_generation_consumers WHERE projection = $1`, name).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("consumer rows after the projection's rows were deleted = %d, %v; want 0", rows, err)
	}
}

package fanout

import (
	"testing"
	"time"

	"github.com/distcache/distcache/services/cache-producer/internal/feed"
)

// TestHourCounter: dead letters count for an hour, by the minute: what was added 59 minutes ago
// still counts, what was added 60 minutes ago no longer does, and a bucket reused an hour later
// starts from zero.
func TestHourCounter(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 7, 7, 0, 30, 0, time.UTC)
	var c hourCounter
	if got := c.sum(t0); got != 0 {
		t.Fatalf("empty sum = %d, want 0", got)
	}
	c.add(t0, 2)
	c.add(t0.Add(10*time.Second), 1)
	c.add(t0.Add(30*time.Minute), 4)
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{
		{0, 3},
		{29 * time.Minute, 3},
		{30 * time.Minute, 7},
		{59 * time.Minute, 7},
		{60 * time.Minute, 4},  // the first minute's bucket is an hour old
		{89 * time.Minute, 4},  // the bucket of minute 30 still counts
		{90 * time.Minute, 0},  // and now it does not
		{-time.Minute, 0},      // a clock gone back counts nothing of the future
		{120 * time.Minute, 0}, // long after
	} {
		if got := c.sum(t0.Add(tc.at)); got != tc.want {
			t.Errorf("sum at +%v = %d, want %d", tc.at, got, tc.want)
		}
	}
	c.add(t0.Add(60*time.Minute), 5) // reuses the first minute's bucket
	if got := c.sum(t0.Add(60 * time.Minute)); got != 9 {
		t.Errorf("sum after reusing a bucket = %d, want 9 (4 + 5)", got)
	}
}

// TestFreshness: the source time of a batch's last record becomes the generation's newest once
// the writer commits a position at or past the batch, not before; a batch without records brings
// none; a restart forgets batches never committed; the newest time never goes back.
func TestFreshness(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC)
	rec := func(off int64, at time.Time) feed.Record { return feed.Record{Offset: off, SourceTime: at} }
	f := newFreshness(2)
	t0, t1, t2 := now.Add(-2*time.Minute), now.Add(-time.Minute), now.Add(-time.Second)
	f.dispatched(0, feed.Batch{From: 0, Records: []feed.Record{rec(0, t0), rec(1, t0), rec(2, t1)}, Next: 3})
	f.dispatched(1, feed.Batch{From: 0, Records: []feed.Record{rec(0, t0), rec(1, t0)}, Next: 3}) // record 2 skipped (a rebuild)
	var s Status
	f.fill(0, &s, now)
	if !s.NewestSourceTime.IsZero() {
		t.Fatalf("newest before the commit = %v, want none", s.NewestSourceTime)
	}
	f.written(0, 3, 1, now)
	f.written(1, 3, 0, now)
	f.fill(0, &s, now)
	if !s.NewestSourceTime.Equal(t1) || s.DeadLettersLastHour != 1 {
		t.Errorf("generation 0 after the commit = %v, %d dead letters; want %v, 1", s.NewestSourceTime, s.DeadLettersLastHour, t1)
	}
	f.fill(1, &s, now)
	if !s.NewestSourceTime.Equal(t0) || s.DeadLettersLastHour != 0 {
		t.Errorf("generation 1 = %v, %d; want %v (its last record written), 0", s.NewestSourceTime, s.DeadLettersLastHour, t0)
	}

	b2 := feed.Batch{From: 3, Records: []feed.Record{rec(3, t2), rec(4, t2)}, Next: 5}
	f.dispatched(0, b2)
	f.restart() // the read ended before the commit
	f.written(0, 5, 0, now)
	f.fill(0, &s, now)
	if !s.NewestSourceTime.Equal(t1) {
		t.Errorf("newest after a restart = %v, want %v (the batch read again brings it)", s.NewestSourceTime, t1)
	}
	f.dispatched(0, b2)
	f.dispatched(0, feed.Batch{From: 5, Next: 6}) // control records only
	f.dispatched(0, feed.Batch{From: 6, Records: []feed.Record{rec(6, t1.Add(-time.Hour))}, Next: 7})
	f.written(0, 7, 0, now)
	f.fill(0, &s, now)
	if !s.NewestSourceTime.Equal(t2) {
		t.Errorf("newest = %v, want %v (an older source time later in the topic does not move it back)", s.NewestSourceTime, t2)
	}
}

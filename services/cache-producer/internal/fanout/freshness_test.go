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

// TestFreshness: a batch's source time becomes the generation's newest once the writer commits
// a position at or past it, not before; a sub-batch that does not end with the batch's last
// record (a rebuild skipped it) brings no time; a restart forgets batches never committed; the
// newest time never goes back.
func TestFreshness(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC)
	recs := func(offs ...int64) []feed.Record {
		out := make([]feed.Record, len(offs))
		for i, o := range offs {
			out[i] = feed.Record{Offset: o}
		}
		return out
	}
	f := newFreshness(2)
	t1, t2 := now.Add(-time.Minute), now.Add(-time.Second)
	b1 := feed.Batch{From: 0, Records: recs(0, 1, 2), Next: 3, SourceTime: t1}
	f.dispatched(0, b1, b1)
	f.dispatched(1, b1, feed.Batch{From: 0, Records: recs(0, 1), Next: 3}) // record 2 skipped
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
	if !s.NewestSourceTime.IsZero() || s.DeadLettersLastHour != 0 {
		t.Errorf("generation 1 = %v, %d; want no time (its last record was skipped), 0", s.NewestSourceTime, s.DeadLettersLastHour)
	}

	b2 := feed.Batch{From: 3, Records: recs(3, 4), Next: 5, SourceTime: t2}
	f.dispatched(0, b2, b2)
	f.restart() // the read ended before the commit
	f.written(0, 5, 0, now)
	f.fill(0, &s, now)
	if !s.NewestSourceTime.Equal(t1) {
		t.Errorf("newest after a restart = %v, want %v (the batch read again brings it)", s.NewestSourceTime, t1)
	}
	f.dispatched(0, b2, b2)
	old := feed.Batch{From: 5, Records: recs(5), Next: 6, SourceTime: t1.Add(-time.Hour)}
	f.dispatched(0, old, old)
	f.written(0, 6, 0, now)
	f.fill(0, &s, now)
	if !s.NewestSourceTime.Equal(t2) {
		t.Errorf("newest = %v, want %v (an older source time later in the topic does not move it back)", s.NewestSourceTime, t2)
	}
}

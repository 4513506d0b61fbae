package distcache

import (
	"math"
	"testing"
	"time"
)

func TestFetchLatencyBounds(t *testing.T) {
	t.Parallel()
	if len(FetchLatencyBounds) != len(fetchBoundsNanos) {
		t.Fatalf("%d bounds in seconds, %d in nanoseconds", len(FetchLatencyBounds), len(fetchBoundsNanos))
	}
	for i, s := range FetchLatencyBounds {
		if got := int64(math.Round(s * 1e9)); got != fetchBoundsNanos[i] {
			t.Errorf("bound %d: %v s is %d ns, want %d", i, s, got, fetchBoundsNanos[i])
		}
	}
}

func TestLatencyHist(t *testing.T) {
	t.Parallel()
	var h latencyHist
	for _, d := range []time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 3 * time.Millisecond, 10 * time.Second} {
		h.observe(d)
	}
	s := h.snapshot()
	if s.Count != 4 || s.Sum != 10*time.Second+3150*time.Microsecond {
		t.Errorf("count %d sum %v, want 4 and 10.00315s", s.Count, s.Sum)
	}
	// Cumulative: 2 at <= 100 µs, 3 from <= 5 ms on; the 10 s fetch only in Count.
	for i, want := range []uint64{2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3} {
		if s.Counts[i] != want {
			t.Errorf("bucket <= %vs: %d, want %d", s.Bounds[i], s.Counts[i], want)
		}
	}
}

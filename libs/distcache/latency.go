package distcache

import (
	"sync/atomic"
	"time"
)

// FetchLatencyBounds are the upper bounds, in seconds, of the buckets of
// ProjectionStats.FetchLatency: from 100 µs (a fetch from a nearby Redis)
// to 2.5 s (past any sensible WithFetchTimeout).
var FetchLatencyBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// Histogram is a snapshot of a latency histogram: Counts[i] is the number
// of observations at most Bounds[i] seconds (cumulative, as Prometheus
// buckets are); observations above the last bound count only in Count.
type Histogram struct {
	Bounds []float64 // shared, do not modify
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

// latencyHist is a lock-free histogram over FetchLatencyBounds. Misses go to
// Redis anyway, so the two clock reads and two atomic adds per fetch are
// noise next to the round trip.
type latencyHist struct {
	buckets [len(fetchBoundsNanos)]atomic.Uint64 // not cumulative
	count   atomic.Uint64
	sumNs   atomic.Int64
}

// fetchBoundsNanos are FetchLatencyBounds in nanoseconds (kept equal by
// TestFetchLatencyBounds).
var fetchBoundsNanos = [...]int64{1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2.5e9}

func (h *latencyHist) observe(d time.Duration) {
	ns := int64(d)
	for i, b := range fetchBoundsNanos {
		if ns <= b {
			h.buckets[i].Add(1)
			break
		}
	}
	h.count.Add(1)
	h.sumNs.Add(ns)
}

func (h *latencyHist) snapshot() Histogram {
	out := Histogram{Bounds: FetchLatencyBounds, Counts: make([]uint64, len(fetchBoundsNanos))}
	var cum uint64
	for i := range h.buckets {
		cum += h.buckets[i].Load()
		out.Counts[i] = cum
	}
	// Read after the buckets: a concurrent observation is then at worst in
	// Count and not yet in a bucket, never in a bucket above Count.
	out.Count = max(h.count.Load(), cum)
	out.Sum = time.Duration(h.sumNs.Load())
	return out
}

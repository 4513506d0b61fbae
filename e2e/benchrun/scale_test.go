package benchrun

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSizes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"1000000,10000000", []int{1_000_000, 10_000_000}},
		{"1M, 10M", []int{1_000_000, 10_000_000}},
		{"500k,2_500_000", []int{500_000, 2_500_000}},
	} {
		got, err := ParseSizes(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ParseSizes(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", ",", "ten", "-5", "0", "1G"} {
		if _, err := ParseSizes(bad); err == nil {
			t.Errorf("ParseSizes(%q): no error", bad)
		}
	}
	_, err := ParseSizes("1M,lots")
	if err == nil || !strings.Contains(err.Error(), `"lots"`) {
		t.Errorf("the error names the bad size: %v", err)
	}
}

func TestPlanSize(t *testing.T) {
	if got := planSize(10_000_000, 0, scaleNeed); got != 10_000_000 {
		t.Errorf("no budget: %d", got)
	}
	if got := planSize(10_000_000, scaleNeed(10_000_000), scaleNeed); got != 10_000_000 {
		t.Errorf("a size that fits is kept: %d", got)
	}
	got := planSize(10_000_000, scaleNeed(6_050_000), scaleNeed)
	if got != 6_000_000 {
		t.Errorf("a size that does not fit becomes the largest multiple of 100k that does: %d, want 6000000", got)
	}
	if got := planSize(10_000_000, 1, scaleNeed); got != 100_000 {
		t.Errorf("a tiny budget still measures 100k: %d", got)
	}
	if got := planSize(10_000_000, 18<<30, producerNeed); got >= 10_000_000 || got < 1_000_000 {
		t.Errorf("producer-bench at 10M does not fit in 18 GiB; planned %d", got)
	}
}

func TestExtrapolate(t *testing.T) {
	// y = 100 + 3x through (1M, 3.0001e6) and (4M, 1.20001e7).
	if got := extrapolate(1e6, 100+3e6, 4e6, 100+12e6, 10e6); math.Abs(got-(100+30e6)) > 1e-3 {
		t.Errorf("line through two points at 10M: %v", got)
	}
	if got := extrapolate(2e6, 600, 2e6, 600, 10e6); math.Abs(got-3000) > 1e-9 {
		t.Errorf("one point, through the origin: %v", got)
	}
}

func TestExtrapolateFigures(t *testing.T) {
	m := map[int]sizeFigures{
		1_000_000: {N: 1_000_000, EdgeHeap: 400e6, BigcacheHeap: 380e6, Warm: 5, Fanout: 100_000, FanoutRaw: 400_000, Backfill: 4, BackfillRaw: 2},
		4_000_000: {N: 4_000_000, EdgeHeap: 1500e6, BigcacheHeap: 1460e6, Warm: 20, Fanout: 80_000, FanoutRaw: 400_000, Backfill: 16, BackfillRaw: 8},
	}
	f := extrapolateFigures(m, []int{1_000_000, 4_000_000}, 10_000_000)
	if f.N != 10_000_000 {
		t.Fatalf("N %d", f.N)
	}
	// Heap: slope (1500-400)/3 = 366.67 MB per M keys.
	if want := 1500e6 + 6*1100e6/3; math.Abs(f.EdgeHeap-want) > 1 {
		t.Errorf("edge heap %v, want %v", f.EdgeHeap, want)
	}
	if math.Abs(f.Warm-50) > 1e-9 || math.Abs(f.Backfill-40) > 1e-9 {
		t.Errorf("times: warm %v backfill %v, want 50 and 40", f.Warm, f.Backfill)
	}
	// Fan-out: 10 s for 1M, 50 s for 4M → 13.33 s per M → 130 s for 10M → 76,923/s.
	if want := 10e6 / (50 + 6*40/3.0); math.Abs(f.Fanout-want) > 1 {
		t.Errorf("fan-out %v, want %v", f.Fanout, want)
	}
}

func TestSizeRows(t *testing.T) {
	f := sizeFigures{N: 10_000_000, EdgeHeap: 4000e6, BigcacheHeap: 3600e6, MapHeap: 3300e6, Warm: 30, WarmPeer: 20,
		RedisKeys: 3300e6, RedisStream: 2500e6, RedisPlain: 3200e6, Fanout: 100_000, FanoutRaw: 350_000, FanoutPaired: 0.3,
		Backfill: 50, BackfillRaw: 25}
	rows := sizeRows(f, " (extrapolated from 1M and 6M)", "", true)
	byKey := map[string]Row{}
	for _, r := range rows {
		byKey[r.Key] = r
	}
	heap := byKey["scale_edge_heap_10000000"]
	if heap.Value != 400 || heap.Ratio != "1.11× bigcache" || heap.Goal == "" || !strings.Contains(heap.Measure, "extrapolated") {
		t.Errorf("heap row %+v", heap)
	}
	if r := byKey["scale_fanout_10000000"]; strings.Contains(r.Measure, "extrapolated") {
		t.Errorf("the producer's rows carry their own note: %+v", r)
	}
	if r := byKey["scale_fanout_10000000"]; !r.Higher || r.Ratio != "0.29×; paired 0.30×" || r.Goal == "" {
		t.Errorf("fan-out row %+v", r)
	}
	if r := byKey["scale_backfill_10000000"]; r.Higher || r.Value != 50 || r.Goal != "10M records ≤ 60 s" {
		t.Errorf("backfill row %+v", r)
	}
	if r := byKey["scale_redis_mem_10000000"]; r.Value != 330 || !strings.Contains(r.Peer, "plain SET 320 B") {
		t.Errorf("redis row %+v", r)
	}
	if len(sizeRows(sizeFigures{N: 1_000_000, EdgeHeap: 1, BigcacheHeap: 1, RedisKeys: 1, RedisPlain: 1}, "", "", false)) != 3 {
		t.Error("without the producer: heap, warm and Redis rows only")
	}
	for _, r := range sizeRows(sizeFigures{N: 1_000_000, EdgeHeap: 1, BigcacheHeap: 1}, "", "", true) {
		switch {
		case r.Key == "scale_fanout_1000000" && r.Goal != "≥ 0.3× raw SET at 1M":
			t.Errorf("the fan-out has a goal at 1M (issue #19 §3): %+v", r)
		case r.Key != "scale_fanout_1000000" && r.Goal != "":
			t.Errorf("the other goals are at 10M, not at 1M: %+v", r)
		}
	}
}

func TestDeliveryCPU(t *testing.T) {
	// The writer alone: 1000 changes in 5 s; 0.01 s/s idle on each of 2 nodes; 0.35 s on the
	// primary (0.3 s for the changes: 300 µs each), 0.1 s on the replica (0.05 for the changes).
	writer := edgesRun{Changes: 1000, Dur: 5, CPUNodes: []float64{0.35, 0.1}, IdleNodes: []float64{0.01, 0.01}}
	// 100 edges on the primary, 500 changes in 4 s: idle 0.05 s/s on the primary; the primary's
	// CPU is idle 0.2 + writer 0.15 + deliveries 0.5 (10 µs × 50,000).
	r := edgesRun{Edges: 100, Changes: 500, Dur: 4, Delivered: 50_000, CPUNodes: []float64{0.85, 0.065}, IdleNodes: []float64{0.05, 0.01}}
	r.deliveryCPU(writer)
	if got := 1e6 * r.CPUAll / float64(r.Delivered); math.Abs(got-10) > 1e-6 {
		t.Errorf("µs per delivery %v, want 10", got)
	}
	if math.Abs(r.CPUMax-0.5) > 1e-9 {
		t.Errorf("busiest node %v, want 0.5", r.CPUMax)
	}
	if want := 0.04 / 100; math.Abs(r.IdleEdge-want) > 1e-12 {
		t.Errorf("idle per edge %v, want %v", r.IdleEdge, want)
	}
}

func TestEdgesRows(t *testing.T) {
	runs := []edgesRun{
		{Edges: 10, Delivered: 1000, CPUAll: 0.02, Rate: 200, Lat: Dist{P99: 5 * time.Millisecond}, IdleEdge: 50e-6},
		{Edges: 10, Replicas: true, Delivered: 1000, CPUAll: 0.03, CPUMax: 0.01, Rate: 200, Lat: Dist{P99: 10 * time.Millisecond, Unseen: 3}, IdleEdge: 60e-6},
		{Edges: 100, Delivered: 0}, // nothing delivered: no row
	}
	rows := edgesRows(runs, 2, 200)
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3: %+v", len(rows), rows)
	}
	if rows[0].Key != "scale_edges_cpu_10" || rows[0].Value != 20 || !strings.Contains(rows[0].Peer, "30.00 µs on all nodes, 10.00 µs on the busiest") || rows[0].Ratio != "busiest node 0.50×" {
		t.Errorf("cpu row %+v", rows[0])
	}
	if rows[1].Key != "scale_edges_idle_10" || math.Abs(rows[1].Value-50) > 1e-9 || rows[1].Ratio != "1.20×" {
		t.Errorf("idle row %+v", rows[1])
	}
	if rows[2].Key != "scale_edges_p99_10" || rows[2].Value != 5 || !strings.Contains(rows[2].Peer, "(3 not seen)") || rows[2].Ratio != "2.00× with replicas" {
		t.Errorf("p99 row %+v", rows[2])
	}
}

func TestInfoField(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\nused_cpu_sys_children:9.0\r\n"
	if v, ok := infoField(info, "used_cpu_sys"); !ok || v != 1.25 {
		t.Errorf("used_cpu_sys %v %v", v, ok)
	}
	if v, ok := infoField(info, "used_cpu_user"); !ok || v != 2.5 {
		t.Errorf("used_cpu_user %v %v", v, ok)
	}
	if _, ok := infoField(info, "used_memory"); ok {
		t.Error("a missing field was found")
	}
}

func TestHumanKeys(t *testing.T) {
	for n, want := range map[int]string{1_000_000: "1M", 10_000_000: "10M", 2_500_000: "2.5M", 100_000: "100k", 1234: "1234"} {
		if got := humanKeys(n); got != want {
			t.Errorf("humanKeys(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestWriteScaleMarkdown(t *testing.T) {
	res := &Result{Started: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC), Notes: []string{"the run took 5m"},
		Rows: []Row{{Key: "scale_warm_1000000", Measure: "edge warm start from SCAN, 1M keys", Value: 4.25, Unit: "s", Peer: "p", Ratio: "1.10×"}}}
	var b bytes.Buffer
	cfg := ScaleConfig{Sizes: []int{1_000_000}, EdgeRate: 200, EdgeDuration: 10 * time.Second, Replicas: 2}
	regs := Compare(res.Rows, Baseline{Rows: map[string]float64{"scale_warm_1000000": 3}}, 0.2)
	if len(regs) != 1 {
		t.Fatalf("a warm start of 4.25 s against 3 s is a regression: %+v", regs)
	}
	if err := WriteScaleMarkdown(&b, cfg, res, regs, "baseline-scale.json"); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"| edge warm start from SCAN, 1M keys | 4.2 s | p | 1.10× |  |", "**1 figure(s) worse by more than 20%**", "scale_warm_1000000: 4.25, baseline 3.00 (42% worse)", "- the run took 5m", "1M keys of 200 bytes"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

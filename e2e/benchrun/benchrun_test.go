package benchrun

import (
	"bytes"
	"image/png"
	"testing"
	"time"
)

func TestParseBench(t *testing.T) {
	t.Parallel()
	text := "goos: linux\nBenchmarkHit/serial/distcache-2         \t 9876543\t       121.5 ns/op\t      0 B/op\t 0 allocs/op\n" +
		"BenchmarkHit/serial/distcache-2 \t 100 \t 130.5 ns/op\nBenchmarkMiss/go-redis-GET \t 10 \t 25000 ns/op\nPASS\n"
	got := parseBenchMetrics(text + "BenchmarkPropagation/rueidis-invalidation-2 \t 500 \t 0 ns/op\t 812345 p50-ns\t 2100000 p99-ns\n")
	if v := got.runs("BenchmarkHit/serial/distcache", "ns/op"); len(v) != 2 || v[0] != 121.5 || v[1] != 130.5 {
		t.Errorf("distcache hit runs = %v, want [121.5 130.5]", v)
	}
	if v := got.runs("BenchmarkHit/serial/distcache", "allocs/op"); len(v) != 1 || v[0] != 0 {
		t.Errorf("distcache hit allocs = %v, want [0] (the second run has no -benchmem columns)", v)
	}
	if v := got.runs("BenchmarkMiss/go-redis-GET", "ns/op"); len(v) != 1 || v[0] != 25000 {
		t.Errorf("miss runs = %v, want [25000]", v)
	}
	if v := got.median("BenchmarkPropagation/rueidis-invalidation", "p99-ns"); v != 2100000 {
		t.Errorf("propagation p99 = %v, want 2100000", v)
	}
}

func TestJoinTestOutput(t *testing.T) {
	t.Parallel()
	in := `{"Action":"start","Package":"x"}
{"Action":"output","Output":"BenchmarkHit/serial/distcache-2 \t"}
{"Action":"output","Output":" 10\t 99 ns/op\n"}
`
	if got := parseBenchMetrics(joinTestOutput([]byte(in))).runs("BenchmarkHit/serial/distcache", "ns/op"); len(got) != 1 || got[0] != 99 {
		t.Errorf("parsed %v, want [99]", got)
	}
}

func TestParsePrograms(t *testing.T) {
	t.Parallel()
	pub := "          MEDIAN throughput         txn    31234 ev/s (goal >= 30000)\n MEDIAN throughput  idempotent   45000 ev/s (goal >= 30000)\n"
	if got := parsePublisher(pub); got["txn"] != 31234 || got["idempotent"] != 45000 {
		t.Errorf("publisher = %v", got)
	}
	runs := "   throughput (20000 x 1024 B, batch 2000)  txn         1    30111 ev/s\nthroughput (20000 x 1024 B, batch 2000)  idempotent  1    44000 ev/s\n" +
		"throughput (20000 x 1024 B, batch 2000)  txn         2    32222 ev/s\ncommit->ack @ 5000 ev/s (1 events, 4 writers)  txn  1  p50 1 ms\n" + pub
	if got := parsePublisherRuns(runs); len(got["txn"]) != 2 || got["txn"][0] != 30111 || got["txn"][1] != 32222 || len(got["idempotent"]) != 1 {
		t.Errorf("publisher runs = %v, want txn [30111 32222], idempotent [44000]", got)
	}
	prod := "                           measurement  records  runs  median time  median rate (/s)  ratio to raw SET  Redis CPU µs/record  note\n" +
		"  raw pipelined SET (go-redis, GOGC=100)   200000     3        1.2s            166666            1.000×  1.50\n" +
		"  raw pipelined SET (go-redis, GOGC=400)   200000     3        1.1s            181818            1.090×  1.40  for the record\n" +
		" broker → Redis fan-out, 2 projections   200000     3        4s              50000             0.300×  7.10  records/s\n"
	raw := "raw pipelined SET (go-redis, GOGC=100)"
	got := parseProducer(prod, raw, "broker → Redis fan-out, 2 projections", "missing")
	if got[raw] != 166666 || got["broker → Redis fan-out, 2 projections"] != 50000 || got["missing"] != 0 {
		t.Errorf("producer = %v", got)
	}
	paired := prod + "fan-out paired with a raw SET run just before each: median ratio 0.316× (goal >= 0.3×; runs: 0.316 0.306 0.344)\n"
	if r := parsePairedRatio(paired); r != 0.316 {
		t.Errorf("paired ratio = %v, want 0.316", r)
	}
	if r := parsePairedRatio(prod); r != 0 {
		t.Errorf("paired ratio without the line = %v, want 0", r)
	}
}

func TestCompare(t *testing.T) {
	t.Parallel()
	rows := []Row{
		{Key: "lat", Value: 13, Unit: "ms"},       // lower is better: 30% worse
		{Key: "ok", Value: 11, Unit: "ms"},        // 10% worse: not flagged
		{Key: "thr", Value: 70, Higher: true},     // higher is better: 30% worse
		{Key: "faster", Value: 200, Higher: true}, // better
		{Key: "new", Value: 5},                    // not in the baseline
	}
	base := Baseline{Rows: map[string]float64{"lat": 10, "ok": 10, "thr": 100, "faster": 100}}
	got := Compare(rows, base, 0.2)
	if len(got) != 2 || got[0].Key != "lat" || got[1].Key != "thr" {
		t.Fatalf("regressions = %+v, want lat and thr", got)
	}
	if got[0].Change < 0.29 || got[0].Change > 0.31 {
		t.Errorf("lat change = %v, want 0.3", got[0].Change)
	}
}

func TestTrackerAndSummary(t *testing.T) {
	t.Parallel()
	tr := newTracker()
	t0 := time.Now()
	tr.add(7, 1, t0)
	tr.add(7, 2, t0.Add(time.Millisecond))
	tr.add(8, 5, t0)
	tr.seen(7, 2, t0.Add(3*time.Millisecond)) // both commits of item 7 become visible at once
	tr.seen(8, 4, t0.Add(time.Second))        // an older value: commit 5 still pending
	if len(tr.lat) != 2 || tr.lat[0] != 3*time.Millisecond || tr.lat[1] != 2*time.Millisecond {
		t.Errorf("latencies = %v, want [3ms 2ms]", tr.lat)
	}
	if ids := tr.ids(nil); len(ids) != 1 || ids[0] != 8 {
		t.Errorf("pending ids = %v, want [8]", ids)
	}
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	d := summarize(lat, 3)
	if d.N != 1000 || d.P50 != 501*time.Millisecond || d.P99 != 991*time.Millisecond || d.P999 != 1000*time.Millisecond || d.Unseen != 3 {
		t.Errorf("summary = %+v", d)
	}
}

func TestWriteChart(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	s := []Series{{Label: "a", Samples: []time.Duration{time.Millisecond, 2 * time.Millisecond}}, {Label: "b"}}
	if err := WriteChart(&buf, "t", s); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 900 || b.Dy() != 520 {
		t.Errorf("size %v, want 900x520", b)
	}
}

func TestStreamChanges(t *testing.T) {
	t.Parallel()
	single := streamChanges(map[string]any{"k": "item-1", "v": "0000000000000002s{}"})
	if len(single) != 1 || single["item-1"] != "0000000000000002s{}" {
		t.Errorf("single write = %v", single)
	}
	batch := streamChanges(map[string]any{"item-1": "a", "item-2": "b"})
	if len(batch) != 2 || batch["item-1"] != "a" || batch["item-2"] != "b" {
		t.Errorf("batch = %v", batch)
	}
}

// A stage that shows a commit before its writer has recorded it (the broker watcher can receive
// the record before the writer's goroutine is scheduled again after COMMIT) must count it, at 0,
// rather than leave it pending until the item's next update is seen.
func TestTrackerSeenBeforeAdd(t *testing.T) {
	t.Parallel()
	tr := newTracker()
	t0 := time.Unix(1000, 0)
	tr.seen(7, 3, t0.Add(time.Millisecond))  // seq 3 of item 7 seen first…
	tr.add(7, 3, t0.Add(2*time.Millisecond)) // …then its writer records the commit
	tr.add(7, 4, t0.Add(3*time.Millisecond))
	tr.seen(7, 4, t0.Add(8*time.Millisecond))
	tr.add(9, 1, t0)
	tr.seen(9, 2, t0.Add(5*time.Millisecond)) // a later seq covers the earlier commit
	want := []time.Duration{0, 5 * time.Millisecond, 5 * time.Millisecond}
	if len(tr.lat) != len(want) {
		t.Fatalf("latencies = %v, want %v", tr.lat, want)
	}
	for i := range want {
		if tr.lat[i] != want[i] {
			t.Errorf("latency %d = %v, want %v (all: %v)", i, tr.lat[i], want[i], tr.lat)
		}
	}
	if tr.early != 1 {
		t.Errorf("early = %d, want 1", tr.early)
	}
	if len(tr.pending) != 0 {
		t.Errorf("pending = %v, want none", tr.pending)
	}
}

package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

// The end-to-end test of issue 6, on the real stack: PostgreSQL (registry), Redis, the kfake
// broker, the Temporal dev server, this control-plane (run, in process) and the real
// cache-producer (built from services/cache-producer and run as its own process).
const (
	e2eRecords  = 100_000
	e2eHotKeys  = 500 // the keys readers read and the writer updates
	e2eReaders  = 8
	e2eWriteHz  = 100
	e2eProj     = "users_by_email"
	e2eGrace    = 3 * time.Second
	e2eCutoverT = time.Second // every client on the new generation within this of the cutover
)

// noPause is a closed channel: receiving from it never blocks.
var noPause = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func userRecord(t testing.TB, id int, seq int64) *kgo.Record {
	payload := fmt.Sprintf(`{"id":%d,"email":"User%d@Example.com","name":"name %d","status":"active","seq":%d}`, id, id, id, seq)
	r, err := events.ToRecord(events.Envelope{
		Aggregate: "users", Key: strconv.Itoa(id), Version: seq, Op: events.OpUpsert,
		Payload: json.RawMessage(payload), EventID: uuid4(), SourceTime: time.Now(),
	}, events.DefaultTopicPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestIssue6EndToEnd: register a projection over REST; backfill it from a topic already holding
// 100,000 records and cut over; then update it (a field added) while 8 goroutines Get through
// libs/distcache clients and 100 updates/s flow. It checks: zero failed reads; no read older than
// one already returned for that key; every client on the new generation within 1 s of the
// cutover; the old generation's keys gone after the grace period.
func TestIssue6EndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	root, err := devstacktest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	producerBin := filepath.Join(t.TempDir(), "cache-producer")
	buildDone := make(chan error, 1)
	go func() { // built while the components start
		build := func() error {
			return devstack.GoBuild(ctx, filepath.Join(root, "services", "cache-producer"), ".", producerBin, false)
		}
		err := build()
		if err != nil { // once more: a go build racing other builds on this machine can fail spuriously
			err = build()
		}
		buildDone <- err
	}()

	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	k := devstacktest.Kafka(t)
	tmp := devstacktest.Temporal(t)

	// The topic, already holding 100,000 records (version 1 each).
	kc, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	topic := events.Topic(events.DefaultTopicPrefix, "users")
	compact := "compact"
	if resp, err := kadm.NewClient(kc).CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v, %v", err, resp.Err)
	}
	var produced sync.WaitGroup
	var produceErr atomic.Value
	for i := range e2eRecords {
		produced.Add(1)
		kc.Produce(ctx, userRecord(t, i, 1), func(_ *kgo.Record, err error) {
			if err != nil {
				produceErr.Store(err)
			}
			produced.Done()
		})
	}
	produced.Wait()
	if err, _ := produceErr.Load().(error); err != nil {
		t.Fatalf("produce: %v", err)
	}

	// The control-plane.
	env := serviceEnv(dbURL, r.Addr, tmp.HostPort,
		"CONTROLPLANE_MODELS", "users=id,email,name,status,seq",
		"CONTROLPLANE_RETIRE_GRACE", e2eGrace.String(),
		"CONTROLPLANE_RETIRE_DRAIN", "500ms",
	)
	if err := migrations.Up(ctx, dbURL, migrations.Control); err != nil {
		t.Fatalf("migrate the registry: %v", err)
	}
	addrs := make(chan listeners, 1)
	onListen = func(l listeners) { addrs <- l }
	t.Cleanup(func() { onListen = nil })
	logs := &lockedBuffer{}
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- run(runCtx, nil, func(k string) string { return env[k] }, logs) }()
	t.Cleanup(func() {
		stopRun()
		<-runDone
	})
	var l listeners
	select {
	case l = <-addrs:
	case err := <-runDone:
		t.Fatalf("control-plane: %v\n%s", err, logs)
	}

	// The cache-producer, as its own process.
	if err := <-buildDone; err != nil {
		t.Fatalf("build cache-producer: %v", err)
	}
	prodHTTP := freeAddr(t)
	prod, err := devstack.StartProgram(ctx, devstack.ProgramConfig{
		Name: "cache-producer", Dir: t.TempDir(), Args: []string{producerBin}, Mode: devstack.Attached,
		Env: []string{
			"PRODUCER_DATABASE_URL=" + dbURL, "PRODUCER_REDIS_ADDRS=" + r.Addr, "PRODUCER_KAFKA_BROKERS=" + k.Addr,
			"PRODUCER_TEMPORAL_HOSTPORT=" + tmp.HostPort, "PRODUCER_TEMPORAL_NAMESPACE=" + tmp.Namespace,
			"PRODUCER_HTTP_ADDR=" + prodHTTP,
		},
		Ready: func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+prodHTTP+"/healthz", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("healthz %d", resp.StatusCode)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatalf("start cache-producer: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cache-producer log tail:\n%s", prod.LogTail())
		}
		_ = prod.Stop(15 * time.Second)
	})

	// 1-2. Register over REST; the backfill of 100,000 records and the cutover follow.
	c := restClient{t: t, base: "http://" + l.http.Addr().String()}
	def := map[string]any{"name": e2eProj, "model": "users", "key_template": "{email}", "lowercase_key": true,
		"fields": []string{"id", "email", "seq"}}
	if code, body := c.call("POST", "/v1/projections", def); code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	start := time.Now()
	devstacktest.Eventually(t, 4*time.Minute, func() bool {
		states, cur, _ := c.status(e2eProj)
		return states["1"] == "live" && cur == "1"
	}, "generation 1 live")
	t.Logf("backfill of %d records and cutover: %v", e2eRecords, time.Since(start))
	_, st := c.call("GET", "/v1/projections/"+e2eProj+"/status", nil)
	g1 := st["generations"].([]any)[0].(map[string]any)
	if bf := g1["backfill"].(map[string]any); fmt.Sprint(bf["records_done"]) != strconv.Itoa(e2eRecords) {
		t.Errorf("generation 1 backfill = %v, want %d records done", bf, e2eRecords)
	}

	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()

	// 3. Readers: 8 goroutines, each with its own Client, Get the hot keys continuously.
	clients := make([]*distcache.Client, e2eReaders)
	for i := range clients {
		cl, err := distcache.New(ctx, distcache.WithAddrs(r.Addr), distcache.WithProjections(e2eProj))
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = cl
		defer cl.Close(context.Background())
	}
	var (
		reads, failed, regressions atomic.Int64
		firstFailure               atomic.Value
		stopLoad                   = make(chan struct{})
		load                       sync.WaitGroup
	)
	for i, cl := range clients {
		load.Add(1)
		go func() {
			defer load.Done()
			seen := make(map[int]int64, e2eHotKeys) // key → highest seq returned
			for n := i; ; n++ {
				// Continuous, but paced (a 1 ms pause every 16 Gets) so the load leaves the two
				// cores some room for the services under test.
				pause := noPause
				if n%16 == 0 {
					pause = time.After(time.Millisecond)
				}
				select {
				case <-stopLoad:
					return
				case <-pause:
				}
				id := n % e2eHotKeys
				gctx, gcancel := context.WithTimeout(ctx, 2*time.Second)
				v, err := cl.Get(gctx, e2eProj, fmt.Sprintf("user%d@example.com", id))
				gcancel()
				reads.Add(1)
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("Get user%d: %v", id, err))
					continue
				}
				var val struct {
					Seq int64 `json:"seq"`
				}
				if err := json.Unmarshal(v, &val); err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("value of user%d %q: %v", id, v, err))
					continue
				}
				if val.Seq < seen[id] {
					regressions.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("user%d: seq %d after %d", id, val.Seq, seen[id]))
				}
				seen[id] = max(seen[id], val.Seq)
			}
		}()
	}
	// Writer: 100 updates/s to the hot keys, each a newer version.
	load.Add(1)
	var written atomic.Int64
	go func() {
		defer load.Done()
		tick := time.NewTicker(time.Second / e2eWriteHz)
		defer tick.Stop()
		seqs := make([]int64, e2eHotKeys)
		for n := 0; ; n++ {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			id := n % e2eHotKeys
			seqs[id]++
			if err := kc.ProduceSync(ctx, userRecord(t, id, seqs[id]+1)).FirstErr(); err != nil {
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("produce: %v", err))
				return
			}
			written.Add(1)
		}
	}()
	// The cutover instant, seen from Redis, and each client's switch.
	var cutoverAt time.Time
	switchedAt := make([]time.Time, e2eReaders)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-stopLoad:
				return
			case <-time.After(2 * time.Millisecond):
			}
			now := time.Now()
			if cutoverAt.IsZero() {
				if g, _ := rdb.Get(ctx, distcache.PointerKey(e2eProj)).Int64(); g == 2 {
					cutoverAt = now
				}
			}
			for i, cl := range clients {
				if switchedAt[i].IsZero() && cl.Generation(e2eProj) == 2 {
					switchedAt[i] = now
				}
			}
		}
	}()

	// Two seconds' worth of updates (and the reads beside them) before the update.
	devstacktest.Eventually(t, time.Minute, func() bool { return written.Load() >= 2*e2eWriteHz }, "load before the update")
	def["fields"] = []string{"id", "email", "seq", "name"}
	if code, body := c.call("PUT", "/v1/projections/"+e2eProj, def); code != 200 {
		t.Fatalf("update: %d %v", code, body)
	}
	devstacktest.Eventually(t, 4*time.Minute, func() bool {
		states, cur, _ := c.status(e2eProj)
		return states["2"] == "live" && cur == "2"
	}, "generation 2 live")
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		for _, cl := range clients {
			if cl.Generation(e2eProj) != 2 {
				return false
			}
		}
		return true
	}, "every client on generation 2")
	after := written.Load()
	devstacktest.Eventually(t, time.Minute, func() bool { return written.Load() >= after+2*e2eWriteHz }, "load after the cutover")
	close(stopLoad)
	load.Wait()
	<-watchDone

	t.Logf("reads %d, failed %d, regressions %d, updates written %d", reads.Load(), failed.Load(), regressions.Load(), written.Load())
	if f, _ := firstFailure.Load().(string); f != "" {
		t.Errorf("first failure: %s", f)
	}
	if failed.Load() != 0 || regressions.Load() != 0 {
		t.Errorf("failed reads %d, regressions %d; want 0 and 0", failed.Load(), regressions.Load())
	}
	if reads.Load() < 1000 || written.Load() < 200 {
		t.Errorf("load too small to mean anything: %d reads, %d updates", reads.Load(), written.Load())
	}
	if cutoverAt.IsZero() {
		t.Fatal("never saw the pointer move to generation 2")
	}
	var slowest time.Duration
	for i, at := range switchedAt {
		d := at.Sub(cutoverAt)
		if at.IsZero() || d > e2eCutoverT {
			t.Errorf("client %d switched %v after the cutover, want within %v", i, d, e2eCutoverT)
		}
		slowest = max(slowest, d)
	}
	t.Logf("slowest client on generation 2: %v after the pointer moved", slowest)
	// The new field is served.
	v, err := clients[0].Get(ctx, e2eProj, "user7@example.com")
	if err != nil || !json.Valid(v) || !containsField(v, "name") {
		t.Errorf("generation 2 value = %s, %v; want the added field", v, err)
	}

	// 4. The old generation's keys are gone after the grace period.
	devstacktest.Eventually(t, e2eGrace+time.Minute, func() bool {
		states, _, _ := c.status(e2eProj)
		n, err := countMatching(ctx, rdb, distcache.GenerationPattern(e2eProj, 1))
		return states["1"] == "retired" && err == nil && n == 0
	}, "generation 1 retired and its keys unlinked")
	if n, _ := countMatching(ctx, rdb, distcache.GenerationPattern(e2eProj, 2)); n != e2eRecords {
		t.Errorf("generation 2 holds %d keys, want %d", n, e2eRecords)
	}
}

func containsField(v []byte, field string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(v, &m) != nil {
		return false
	}
	_, ok := m[field]
	return ok
}

// countMatching counts the keys matching pattern with a full SCAN.
func countMatching(ctx context.Context, rdb *redis.Client, pattern string) (int, error) {
	n := 0
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	return n, iter.Err()
}

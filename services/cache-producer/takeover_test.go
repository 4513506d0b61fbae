package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// TestProducersShareAndTakeOver (issue #15 §1) runs three cache-producer processes sharing three
// topics through their consumer group (the default session timeout, 10 s), under a steady write
// load (the "users" topic the busiest), with an edge client reading every projection, on a single
// Redis node and on Redis Cluster:
//
//  1. kill -9 of the replica that owns the busiest topic: another replica claims its generation
//     and the generation's offset passes the topic's end as of the kill (the takeover time is
//     logged; the goal is 15 s);
//  2. SIGSTOP of the replica that owns it then, past the session timeout, and SIGCONT: the others
//     take the topic over meanwhile, and the resumed replica (a zombie) writes nothing: at most
//     the batch whose commit was already sent when it stopped, and it does not claim back;
//  3. scale 3 → 1 → 3 (SIGTERM: the leaving replicas hand their topics over at once).
//
// At the end every generation equals the projection of its topic (a model of every record
// produced), the change streams' versions never go back, the edge never returned an older
// version of a key than one it had returned, and cached reads had zero errors.
func TestProducersShareAndTakeOver(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) { t.Parallel(); testTakeOver(t, false) })
	t.Run("cluster", func(t *testing.T) { t.Parallel(); testTakeOver(t, true) })
}

// takeoverModels are the three topics' models and projections; users is the busiest.
var takeoverModels = []projection.Definition{
	{Name: "users_by_id", Model: "users", KeyTemplate: "u:{id}", Fields: []string{"id", "n"}},
	{Name: "orders_by_id", Model: "orders", KeyTemplate: "o:{id}", Fields: []string{"id", "n"}},
	{Name: "items_by_id", Model: "items", KeyTemplate: "i:{id}", Fields: []string{"id", "n"}},
}

// replica is one cache-producer process of the test.
type replica struct {
	name string
	http string
	c    *child
}

func testTakeOver(t *testing.T, cluster bool) {
	ctx := context.Background()
	dbURL := devstacktest.Database(t)
	st := newStack(ctx, t)
	reg := st.reg
	kafka := st.kafka.Addr
	var (
		rdb       redis.UniversalClient = st.rdb
		redisEnv                        = []string{"PRODUCER_REDIS_ADDRS=" + st.redis.Addr}
		edgeRedis                       = distcache.WithRedis(st.rdb)
	)
	_ = dbURL
	if cluster {
		c := devstacktest.RedisCluster(t)
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
		t.Cleanup(func() { _ = cc.Close() })
		rdb, edgeRedis = cc, distcache.WithRedis(cc)
		redisEnv = []string{"PRODUCER_REDIS_ADDRS=" + strings.Join(c.Addrs(), ","), "PRODUCER_REDIS_CLUSTER=true"}
	}
	led := ledger.New(rdb, 0)
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}

	// One live generation per topic, consumed from offset 0.
	producers := make([]*prodtest.Producer, len(takeoverModels))
	gens := make([]int64, len(takeoverModels))
	zero := int64(0)
	for i, def := range takeoverModels {
		producers[i] = prodtest.NewProducer(t, kafka, "distcache", def.Model)
		if err := reg.CreateProjection(ctx, def); err != nil {
			t.Fatal(err)
		}
		gen, _, err := reg.AllocateGeneration(ctx, def, "wf-"+def.Name)
		if err != nil {
			t.Fatal(err)
		}
		gens[i] = gen
		for _, state := range []string{workflows.StateTailing, workflows.StateLive} {
			if err := reg.SetState(ctx, def.Name, gen, state, &zero); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Cutover(ctx, def.Name, gen); err != nil {
			t.Fatal(err)
		}
	}

	env := func(name, httpAddr string) []string {
		return append([]string{
			"PRODUCER_DATABASE_URL=" + st.dbURL, "PRODUCER_KAFKA_BROKERS=" + kafka, "PRODUCER_HTTP_ADDR=" + httpAddr,
			"PRODUCER_REPLICA_NAME=" + name, "PRODUCER_BATCH_SIZE=200", "PRODUCER_RELOAD_INTERVAL=1s",
		}, redisEnv...)
	}
	var (
		rmu      sync.Mutex
		replicas = map[string]*replica{}
		started  int
	)
	start := func() *replica {
		rmu.Lock()
		defer rmu.Unlock()
		started++
		r := &replica{name: fmt.Sprintf("p%d", started), http: freeAddr(t)}
		r.c = startChild(t, env(r.name, r.http))
		replicas[r.name] = r
		return r
	}
	ownedBy := func(r *replica) int {
		_, body := get("http://" + r.http + "/metrics")
		m := regexp.MustCompile(`(?m)^distcache_producer_topics_owned (\d+)`).FindStringSubmatch(body)
		if m == nil {
			return -1
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	// balanced: every live replica owns at least one topic and together they own each once.
	balanced := func() bool {
		rmu.Lock()
		defer rmu.Unlock()
		total := 0
		for _, r := range replicas {
			n := ownedBy(r)
			if n < 1 && len(replicas) <= len(takeoverModels) {
				return false
			}
			total += n
		}
		return total == len(takeoverModels)
	}
	writerOf := func(i int) string {
		w, _ := led.Writer(ctx, takeoverModels[i].Name, gens[i])
		return ledger.ClaimReplica(w)
	}
	for range 3 {
		start()
	}
	devstacktest.Eventually(t, 60*time.Second, balanced, "three replicas share the three topics")

	// The load: users gets 3 of every 5 records; keys are reused so values change.
	var (
		mu   sync.Mutex
		recs = make([][]*kgo.Record, len(takeoverModels))
		seq  int
	)
	stopLoad, loadDone, loadErr := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() { // not the test's goroutine: no t.Fatal here
		defer close(loadDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			batch := make([][]*kgo.Record, len(takeoverModels))
			for range 10 {
				seq++
				i := []int{0, 0, 0, 1, 2}[seq%5]
				id := strconv.Itoa(rand.IntN(300))
				if seq%29 == 0 {
					batch[i] = append(batch[i], producers[i].Tombstone(id))
				} else {
					batch[i] = append(batch[i], producers[i].Upsert(id, map[string]any{"id": id, "n": seq}))
				}
			}
			for i, b := range batch {
				if len(b) == 0 {
					continue
				}
				if _, err := producers[i].TryProduce(b...); err != nil {
					loadErr <- err
					return
				}
				mu.Lock()
				recs[i] = append(recs[i], b...)
				mu.Unlock()
			}
		}
	}()
	endOf := func(i int) int64 {
		mu.Lock()
		defer mu.Unlock()
		if len(recs[i]) == 0 {
			return 0
		}
		return recs[i][len(recs[i])-1].Offset + 1
	}
	offsetOf := func(i int) int64 {
		off, _, _ := led.Offset(ctx, takeoverModels[i].Name, gens[i])
		return off
	}

	// An edge follows the three projections and reads random keys the whole time.
	names := make([]string, len(takeoverModels))
	for i, d := range takeoverModels {
		names[i] = d.Name
	}
	edge, err := distcache.New(ctx, edgeRedis, distcache.WithProjections(names...), distcache.WithTailBlock(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close(ctx)
	prefixes := []string{"u:", "o:", "i:"}
	el := readEdge(ctx, edge, func() (string, string) {
		i := rand.IntN(len(takeoverModels))
		return names[i], prefixes[i] + strconv.Itoa(rand.IntN(300))
	})

	// caughtUp waits until topic i's generation passes the topic's end as of now and returns how
	// long that took.
	caughtUp := func(i int, what string) time.Duration {
		t.Helper()
		t0, target := time.Now(), endOf(i)
		devstacktest.Eventually(t, 60*time.Second, func() bool { return offsetOf(i) >= target }, "%s: %s/g%d passes offset %d", what, takeoverModels[i].Name, gens[i], target)
		return time.Since(t0)
	}
	for i := range takeoverModels {
		caughtUp(i, "before the faults")
	}

	// ownerOf waits until topic i's writer claim names a live replica that
	// consumes the topic and returns it. A rebalance moves the topic first and
	// the claim when the new owner's consumer starts: between the two, the
	// claim still names the replica the topic left (a SIGSTOP of that one
	// showed the topic "claimed by p4 after 0s" and tested no zombie).
	ownerOf := func(i int, what string) *replica {
		t.Helper()
		var owner *replica
		devstacktest.Eventually(t, 60*time.Second, func() bool {
			rmu.Lock()
			r := replicas[writerOf(i)]
			rmu.Unlock()
			if r == nil {
				return false
			}
			_, body := get("http://" + r.http + "/status")
			if !strings.Contains(body, `"projection":"`+takeoverModels[i].Name+`"`) {
				return false
			}
			owner = r
			return true
		}, "%s: the writer claim of %s names a replica that consumes it", what, takeoverModels[i].Name)
		return owner
	}

	// 1. kill -9 of the busiest topic's owner.
	owner := ownerOf(0, "before the kill")
	killedAt := time.Now()
	_ = owner.c.cmd.Process.Signal(syscall.SIGKILL)
	_ = owner.c.cmd.Wait()
	rmu.Lock()
	delete(replicas, owner.name)
	rmu.Unlock()
	target := endOf(0)
	devstacktest.Eventually(t, 60*time.Second, func() bool { w := writerOf(0); return w != "" && w != owner.name }, "another replica claims users after the kill")
	claimedIn := time.Since(killedAt)
	devstacktest.Eventually(t, 60*time.Second, func() bool { return offsetOf(0) >= target }, "users passes offset %d after the kill", target)
	t.Logf("kill -9 of %s (owner of users): claimed by %s after %v, the topic's end at the kill written after %v",
		owner.name, writerOf(0), claimedIn.Round(10*time.Millisecond), time.Since(killedAt).Round(10*time.Millisecond))
	start()
	devstacktest.Eventually(t, 60*time.Second, balanced, "three replicas share the topics again after the kill")

	// 2. SIGSTOP past the session timeout, then SIGCONT: the zombie writes nothing.
	zombie := ownerOf(0, "before the SIGSTOP")
	eventsOf := func(r *replica) float64 {
		_, body := get("http://" + r.http + "/metrics")
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^distcache_producer_events_total\{generation="%d",projection="%s"\} (\S+)`, gens[0], takeoverModels[0].Name))
		m := re.FindStringSubmatch(body)
		if m == nil {
			return 0
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	caughtUp(0, "before the SIGSTOP")
	devstacktest.Eventually(t, 30*time.Second, func() bool { return eventsOf(zombie) > 0 }, "%s writes users before it is stopped", zombie.name)
	// What the zombie may still count after the count below is read: the
	// records it committed between that read and the stop, and the one batch
	// whose commit may have been sent before the stop. All of them lie
	// between the generation's offset read just before the count and the
	// topic's end at the stop (the load goroutine appends a record to recs
	// after the broker took it: one tick, at most 10 records, may be taken
	// and not yet appended), except one batch that may have stored its
	// offset before that read and been counted after it (a commit stores the
	// offset, then counts the batch): PRODUCER_BATCH_SIZE, 200 records. The
	// test's goroutine may be descheduled between the read and the signal
	// for hundreds of milliseconds on a loaded machine, so a fixed bound of
	// one batch failed while the zombie wrote nothing after it resumed.
	fromOffset := offsetOf(0)
	before := eventsOf(zombie)
	stoppedAt := time.Now()
	_ = zombie.c.cmd.Process.Signal(syscall.SIGSTOP)
	endAtStop := endOf(0) + 10
	devstacktest.Eventually(t, 60*time.Second, func() bool { w := writerOf(0); return w != "" && w != zombie.name }, "another replica claims users while %s is stopped", zombie.name)
	t.Logf("SIGSTOP of %s: users claimed by %s after %v", zombie.name, writerOf(0), time.Since(stoppedAt).Round(10*time.Millisecond))
	caughtUp(0, "while the zombie is stopped")
	_ = zombie.c.cmd.Process.Signal(syscall.SIGCONT)
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		_, body := get("http://" + zombie.http + "/status")
		return body != "" && !strings.Contains(body, `"projection":"`+takeoverModels[0].Name+`"`)
	}, "the resumed replica %s no longer consumes users", zombie.name)
	caughtUp(0, "after the zombie resumed")
	after := eventsOf(zombie)
	fenced := func() string {
		_, body := get("http://" + zombie.http + "/metrics")
		return strings.Join(regexp.MustCompile(`(?m)^distcache_producer_(fenced_writes_total|rebalances_total)\{.*$`).FindAllString(body, -1), "; ")
	}()
	t.Logf("zombie %s: users records counted %v before SIGSTOP (generation at offset %d, topic's end at the stop %d), %v after SIGCONT; %s",
		zombie.name, before, fromOffset, endAtStop, after, fenced)
	if limit := float64(max(endAtStop-fromOffset, 0) + 200); after-before > limit {
		t.Errorf("the zombie %s counted %v users records after the count was read, more than the %v the topic held past its offset when it was stopped plus one batch: it wrote after it resumed",
			zombie.name, after-before, limit)
	}
	if w := writerOf(0); w == zombie.name {
		t.Errorf("the zombie %s claimed users back", zombie.name)
	}
	// A zombie either has a batch refused (fenced) or finds its group
	// membership lost when it resumes, whichever it meets first; a replica
	// that only had the topic revoked (or nothing) was not one.
	if regexp.MustCompile(`fenced_writes_total\{[^}]*\} [1-9]|rebalances_total\{kind="lost"\} [1-9]`).FindString(fenced) == "" {
		t.Errorf("the stopped replica %s had no batch fenced and did not find its group membership lost when it resumed (%s): it was not a zombie, and the phase tested nothing", zombie.name, fenced)
	}
	devstacktest.Eventually(t, 60*time.Second, balanced, "three replicas share the topics after the zombie resumed")

	// 3. Scale 3 → 1 → 3.
	rmu.Lock()
	var leaving []*replica
	var staying *replica
	for _, r := range replicas {
		if staying == nil {
			staying = r
			continue
		}
		leaving = append(leaving, r)
	}
	rmu.Unlock()
	scaledAt := time.Now()
	for _, r := range leaving {
		_ = r.c.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, r := range leaving {
		if err := r.c.cmd.Wait(); err != nil {
			t.Errorf("%s stopped with %v", r.name, err)
		}
		rmu.Lock()
		delete(replicas, r.name)
		rmu.Unlock()
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool { return ownedBy(staying) == len(takeoverModels) }, "%s owns every topic", staying.name)
	t.Logf("scale 3 → 1: %s owns every topic %v after the SIGTERMs", staying.name, time.Since(scaledAt).Round(10*time.Millisecond))
	for i := range takeoverModels {
		caughtUp(i, "on one replica")
	}
	start()
	start()
	devstacktest.Eventually(t, 60*time.Second, balanced, "three replicas share the topics after scaling back to 3")
	for i := range takeoverModels {
		caughtUp(i, "after scaling back to 3")
	}

	// The end: stop the load, everything arrives, everything is equal.
	close(stopLoad)
	<-loadDone
	select {
	case err := <-loadErr:
		t.Fatalf("produce: %v", err)
	default:
	}
	for i := range takeoverModels {
		caughtUp(i, "at the end")
	}
	el.stop()
	for i, def := range takeoverModels {
		model := prodtest.NewModel(t, def)
		mu.Lock()
		for _, r := range recs[i] {
			model.Apply(r.Offset, string(r.Key), r.Value)
		}
		mu.Unlock()
		got, err := prodtest.ReadGeneration(ctx, rdb, def.Name, gens[i])
		if err != nil {
			t.Fatal(err)
		}
		if d := prodtest.Diff(got, model.Live()); d != "" {
			t.Errorf("%s/g%d differs from the projection of its topic:\n%s", def.Name, gens[i], d)
		}
		if err := prodtest.StreamVersionsIncrease(ctx, rdb, def.Name, gens[i]); err != nil {
			t.Errorf("%s change stream: %v", def.Name, err)
		}
		// Every key the edge serves now equals Redis.
		devstacktest.Eventually(t, 30*time.Second, func() bool {
			for k, v := range model.Live() {
				e, err := edge.GetEntry(ctx, def.Name, k)
				if err != nil || !e.Found || e.Version != v.Version {
					return false
				}
			}
			return true
		}, "the edge serves every key of %s at its version in Redis", def.Name)
	}
	el.check(t)
}

// edgeReads reads keys from an edge continuously (pick chooses each projection and key) until
// stop, recording the reads that failed (not-found aside) and every version older than one the
// edge had returned for that key.
type edgeReads struct {
	mu        sync.Mutex
	seen      map[string]int64
	reads     int
	errs      []string
	backwards []string
	halt      chan struct{}
	done      chan struct{}
}

func readEdge(ctx context.Context, edge *distcache.Client, pick func() (proj, key string)) *edgeReads {
	r := &edgeReads{seen: map[string]int64{}, halt: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.halt:
				return
			default:
			}
			proj, key := pick()
			e, err := edge.GetEntry(ctx, proj, key)
			id := proj + "/" + key
			r.mu.Lock()
			r.reads++
			switch {
			case err == nil && e.Found:
				if prev := r.seen[id]; e.Version < prev {
					r.backwards = append(r.backwards, fmt.Sprintf("%s: %d after %d", id, e.Version, prev))
				}
				r.seen[id] = max(r.seen[id], e.Version)
			case err != nil && !errors.Is(err, distcache.ErrNotFound):
				r.errs = append(r.errs, fmt.Sprintf("%s: %v", id, err))
			}
			r.mu.Unlock()
			time.Sleep(300 * time.Microsecond) // pacing the reader, not waiting for a condition
		}
	}()
	return r
}

// stop ends the reads.
func (r *edgeReads) stop() {
	close(r.halt)
	<-r.done
}

// check logs the reads and fails t on any read error or version regression.
func (r *edgeReads) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("edge: %d reads, %d errors, %d regressions", r.reads, len(r.errs), len(r.backwards))
	if len(r.errs) > 0 {
		t.Errorf("the edge's reads failed %d times, e.g. %v", len(r.errs), r.errs[:min(len(r.errs), 5)])
	}
	if len(r.backwards) > 0 {
		t.Errorf("the edge returned older versions than before: %v", r.backwards[:min(len(r.backwards), 5)])
	}
}

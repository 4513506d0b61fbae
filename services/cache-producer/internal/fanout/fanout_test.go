package fanout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

var (
	byEmail = projection.Definition{
		Name: "users_by_email", Model: "users", KeyTemplate: "{email}", LowercaseKey: true,
		Fields: []string{"id", "name", "email"},
		Filter: &projection.Filter{Field: "status", Op: projection.OpEq, Values: []string{"active"}},
	}
	byID = projection.Definition{
		Name: "users_by_id", Model: "users", KeyTemplate: "user:{id}", Fields: []string{"id", "status"},
	}
)

type stack struct {
	rdb   redis.UniversalClient
	kafka string
	pub   *distcache.Publisher
	led   *ledger.Ledger
}

func newStack(t *testing.T) *stack { return newStackOn(t, false) }

func newStackOn(t *testing.T, cluster bool) *stack {
	t.Helper()
	var rdb redis.UniversalClient
	if cluster {
		c := devstacktest.RedisCluster(t)
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: devstacktest.Redis(t).Addr})
	}
	k := devstacktest.Kafka(t)
	t.Cleanup(func() { rdb.Close() })
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{rdb: rdb, kafka: k.Addr, pub: pub, led: ledger.New(rdb, 0)}
}

func (s *stack) gen(t *testing.T, def projection.Definition, gen int64, topic string) fanout.Generation {
	t.Helper()
	tg, err := fanout.CompileTarget(def.Name, gen, def)
	if err != nil {
		t.Fatal(err)
	}
	return fanout.Generation{Target: tg, Topic: topic, State: workflows.StateLive}
}

func (s *stack) manager(t *testing.T, w *projector.Writer, batch int) *fanout.Manager {
	t.Helper()
	m, err := fanout.NewManager(fanout.Config{
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: w, BatchSize: batch, DrainTimeout: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (s *stack) waitOffset(t *testing.T, def projection.Definition, gen, want int64) {
	t.Helper()
	ctx := context.Background()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		off, ok, err := s.led.Offset(ctx, def.Name, gen)
		return err == nil && ok && off >= want
	}, "%s/g%d offset reaches %d", def.Name, gen, want)
}

func user(id, email, name, status string) map[string]any {
	return map[string]any{"id": id, "email": email, "name": name, "status": status}
}

// TestFanOutSemantics checks, on a real broker and Redis, one record stream
// fanned out to two projections: upserts, a re-key (the old key is deleted),
// a tombstone, a record the filter rejects, a projected key taken over by
// another source key (the first owner's move does not delete it), and dead
// letters for a non-JSON payload and a missing key field, after which
// consumption continues.
func TestFanOutSemantics(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) { t.Parallel(); testFanOutSemantics(t, newStack(t)) })
	t.Run("cluster", func(t *testing.T) { t.Parallel(); testFanOutSemantics(t, newStackOn(t, true)) })
}

func testFanOutSemantics(t *testing.T, s *stack) {
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	w := projector.NewWriter(s.pub, s.led)
	m := s.manager(t, w, 100)
	defer m.Close()
	m.Update(ctx, []fanout.Generation{s.gen(t, byEmail, 1, p.Topic), s.gen(t, byID, 1, p.Topic)})

	offs := p.Produce(
		p.Upsert("1", user("1", "Ann@X.io", "Ann", "active")),  // 0
		p.Upsert("2", user("2", "bob@x.io", "Bob", "active")),  // 1
		p.Upsert("1", user("1", "ann2@x.io", "Ann", "active")), // 2 re-key ann@x.io → ann2@x.io
		p.Tombstone("2"), // 3 bob deleted
		p.Upsert("3", user("3", "cy@x.io", "Cy", "blocked")),   // 4 filtered out
		p.Upsert("4", user("4", "dee@x.io", "Dee", "active")),  // 5
		p.Upsert("4", user("4", "dee@x.io", "Dee", "blocked")), // 6 now filtered: deleted
		p.Garbage("5"), // 7 dead letter
		p.Upsert("6", map[string]any{"id": "6", "name": "NoMail", "status": "active"}), // 8 dead letter (missing email)
		p.Upsert("7", user("7", "ann2@x.io", "Imposter", "active")),                    // 9 takes ann2@x.io over
		p.Upsert("1", user("1", "ann3@x.io", "Ann", "active")),                         // 10 Ann leaves ann2: not hers any more
		p.Upsert("8", user("8", "eve@x.io", "Eve", "active")),                          // 11 consumption continued
	)
	end := offs[len(offs)-1] + 1
	s.waitOffset(t, byEmail, 1, end)
	s.waitOffset(t, byID, 1, end)

	got, err := prodtest.ReadGeneration(ctx, s.rdb, byEmail.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]prodtest.Value{
		"ann2@x.io": {Data: `{"id":"7","name":"Imposter","email":"ann2@x.io"}`, Version: 10},
		"ann3@x.io": {Data: `{"id":"1","name":"Ann","email":"ann3@x.io"}`, Version: 11},
		"eve@x.io":  {Data: `{"id":"8","name":"Eve","email":"eve@x.io"}`, Version: 12},
	}
	if d := prodtest.Diff(got, want); d != "" {
		t.Errorf("users_by_email:\n%s", d)
	}
	got, err = prodtest.ReadGeneration(ctx, s.rdb, byID.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]prodtest.Value{
		"user:1": {Data: `{"id":"1","status":"active"}`, Version: 11},
		"user:3": {Data: `{"id":"3","status":"blocked"}`, Version: 5},
		"user:4": {Data: `{"id":"4","status":"blocked"}`, Version: 7},
		"user:6": {Data: `{"id":"6","status":"active"}`, Version: 9},
		"user:7": {Data: `{"id":"7","status":"active"}`, Version: 10},
		"user:8": {Data: `{"id":"8","status":"active"}`, Version: 12},
	}
	if d := prodtest.Diff(got, want); d != "" {
		t.Errorf("users_by_id:\n%s", d)
	}

	// Dead letters: offset and reason, once each, in both generations that
	// could not project them (by_id has no key field to miss for record 8).
	dead, err := s.rdb.XRange(ctx, ledger.DeadLetterKey(byEmail.Name, 1), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 {
		t.Fatalf("users_by_email dead letters = %d, want 2: %v", len(dead), dead)
	}
	for i, wantOff := range []int64{7, 8} {
		if got := dead[i].Values["offset"]; got != strconv.FormatInt(wantOff, 10) {
			t.Errorf("dead letter %d offset = %v, want %d", i, got, wantOff)
		}
		if r, _ := dead[i].Values["reason"].(string); r == "" {
			t.Errorf("dead letter %d has no reason", i)
		}
	}
	if r := dead[1].Values["reason"].(string); !contains(r, "email") {
		t.Errorf("missing-field reason %q does not name the field", r)
	}
	deadID, _ := s.rdb.XLen(ctx, ledger.DeadLetterKey(byID.Name, 1)).Result()
	if deadID != 1 {
		t.Errorf("users_by_id dead letters = %d, want 1 (the non-JSON payload)", deadID)
	}
	if err := prodtest.StreamVersionsIncrease(ctx, s.rdb, byEmail.Name, 1); err != nil {
		t.Error(err)
	}

	// Forgetting the generation removes every bookkeeping key (on every
	// master of a cluster) and leaves the values to RetireGeneration.
	m.Close()
	n, err := s.led.Forget(ctx, byEmail.Name, 1)
	if err != nil || n < 4 {
		t.Fatalf("Forget = %d, %v; want the offset, index and dead-letter keys removed", n, err)
	}
	if has, _ := s.led.HasBookkeeping(ctx, byEmail.Name, 1); has {
		t.Error("offset key left after Forget")
	}
	for _, k := range []string{ledger.IndexKey(byEmail.Name, 1, "7"), ledger.IndexBucketKey(byEmail.Name, 1, "7"), ledger.IndexLogKey(byEmail.Name, 1), ledger.IndexSnapshotKey(byEmail.Name, 1),
		ledger.IndexFormatKey(byEmail.Name, 1), ledger.DeadLetterKey(byEmail.Name, 1)} {
		if c, err := s.rdb.Exists(ctx, k).Result(); err != nil || c != 0 {
			t.Errorf("EXISTS %s after Forget = %d, %v; want 0", k, c, err)
		}
	}
	if c, err := s.rdb.Exists(ctx, distcache.ValueKey(byEmail.Name, 1, "eve@x.io")).Result(); err != nil || c != 1 {
		t.Errorf("value after Forget: EXISTS = %d, %v; want 1", c, err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestGenerationJoinsLater checks that a generation added to a running topic
// consumer starts from its own stored offset (here: the registry's start
// offset 0) while the other generation continues from where it was, and that
// removing a generation stops its writes.
func TestGenerationJoinsLater(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	m := s.manager(t, projector.NewWriter(s.pub, s.led), 10)
	defer m.Close()
	g1 := s.gen(t, byID, 1, p.Topic)
	m.Update(ctx, []fanout.Generation{g1})
	var recs []*kgo.Record
	for i := range 50 {
		recs = append(recs, p.Upsert(strconv.Itoa(i), user(strconv.Itoa(i), fmt.Sprintf("u%d@x.io", i), "U", "active")))
	}
	p.Produce(recs...)
	s.waitOffset(t, byID, 1, 50)

	g2 := s.gen(t, byEmail, 2, p.Topic)
	m.Update(ctx, []fanout.Generation{g1, g2})
	p.Produce(p.Upsert("99", user("99", "late@x.io", "Late", "active")))
	s.waitOffset(t, byEmail, 2, 51)
	s.waitOffset(t, byID, 1, 51)
	got, err := prodtest.ReadGeneration(ctx, s.rdb, byEmail.Name, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 51 {
		t.Errorf("users_by_email/g2 holds %d keys, want 51 (all from offset 0)", len(got))
	}
	st := m.Statuses()
	if len(st) != 2 || st[0].Lag != 0 || st[1].Lag != 0 {
		t.Errorf("statuses = %+v, want two generations with lag 0", st)
	}

	m.Update(ctx, []fanout.Generation{g2}) // g1 dropped
	p.Produce(p.Upsert("100", user("100", "after@x.io", "After", "active")))
	s.waitOffset(t, byEmail, 2, 52)
	if off, _, _ := s.led.Offset(ctx, byID.Name, 1); off != 51 {
		t.Errorf("dropped generation's offset moved to %d, want 51", off)
	}
	if n, _ := s.rdb.Exists(ctx, distcache.ValueKey(byID.Name, 1, "user:100")).Result(); n != 0 {
		t.Error("dropped generation was still written")
	}
}

// gen is the random workload of the property test.
type workload struct {
	rnd     *rand.Rand
	p       *prodtest.Producer
	sources []string
	email   map[string]string // source → current email (live upserts only)
	holder  map[string]string // email → source holding it
}

// newWorkload is a workload over 60 source keys, drawn from rnd.
func newWorkload(p *prodtest.Producer, rnd *rand.Rand) *workload {
	w := &workload{rnd: rnd, p: p, email: map[string]string{}, holder: map[string]string{}}
	for i := range 60 {
		w.sources = append(w.sources, "s"+strconv.Itoa(i))
	}
	return w
}

func (w *workload) freeEmail() string {
	for {
		e := fmt.Sprintf("E%d@X.io", w.rnd.IntN(200))
		if _, held := w.holder[lower(e)]; !held {
			return e
		}
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

func (w *workload) release(src string) {
	if e, ok := w.email[src]; ok {
		delete(w.holder, lower(e))
		delete(w.email, src)
	}
}

func (w *workload) next() *kgo.Record {
	src := w.sources[w.rnd.IntN(len(w.sources))]
	status := "active"
	if w.rnd.IntN(5) == 0 {
		status = "blocked"
	}
	name := fmt.Sprintf("n%d", w.rnd.IntN(1000))
	switch x := w.rnd.IntN(100); {
	case x < 8:
		w.release(src)
		return w.p.Tombstone(src)
	case x < 12:
		w.release(src)
		return w.p.Garbage(src)
	case x < 16:
		w.release(src)
		return w.p.Upsert(src, map[string]any{"id": src, "name": name, "status": status})
	case x < 40: // re-key
		w.release(src)
		fallthrough
	default:
		e, ok := w.email[src]
		if !ok {
			e = w.freeEmail()
			w.email[src] = e
			w.holder[lower(e)] = src
		}
		return w.p.Upsert(src, user(src, e, name, status))
	}
}

// TestPropertyCrashesMatchModel is the property test: random sequences of
// upserts, re-keys, filter flips, tombstones and bad records, fanned out to
// two projections, while the consumer is stopped abruptly at random points
// (before or after the values of a batch are written, before its index and
// offset are) and restarted from its stored offsets. At the end each
// generation holds exactly what the model computes, every key's versions in
// the change stream strictly increase, and a fresh replay of the topic into
// a new generation holds the same values with the same versions.
func TestPropertyCrashesMatchModel(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	w := newWorkload(p, rand.New(rand.NewPCG(seed, 7)))

	var crashes atomic.Int32
	crashed := make(chan struct{}, 1)
	var faultMu sync.Mutex
	frnd := rand.New(rand.NewPCG(seed, 11))
	fault := func(ctx context.Context, _ projector.Target, _ projector.Step) error {
		faultMu.Lock()
		hit := crashes.Load() < 12 && frnd.IntN(12) == 0
		faultMu.Unlock()
		if !hit {
			return nil
		}
		select {
		case crashed <- struct{}{}:
		default:
		}
		<-ctx.Done() // the process dies here
		return ctx.Err()
	}
	gens := []fanout.Generation{s.gen(t, byEmail, 1, p.Topic), s.gen(t, byID, 1, p.Topic)}
	// Each generation's index layout at random: bucketed (created by the
	// producer) or per key (an offset stored without the layout mark, as a
	// producer before the bucketed layout left it).
	legacy := map[string]bool{}
	for _, d := range []projection.Definition{byEmail, byID} {
		if frnd.IntN(2) == 0 {
			legacy[d.Name] = true
			s.rdb.Set(ctx, ledger.OffsetKey(d.Name, 1), "0", 0)
		}
	}
	t.Logf("per-key index layout: %v", legacy)
	start := func() *fanout.Manager {
		// The index cache full, tiny (most keys read from Redis) or off.
		cacheMax := []int{projector.DefaultIndexCacheEntries, 7, 0}[frnd.IntN(3)]
		m := s.manager(t, projector.NewWriter(s.pub, s.led, projector.WithFault(fault), projector.WithIndexCache(cacheMax)), 1+frnd.IntN(40))
		m.Update(ctx, gens)
		return m
	}
	m := start()
	var all []*kgo.Record
	const rounds, perRound = 20, 150
	for range rounds {
		recs := make([]*kgo.Record, perRound)
		for i := range recs {
			recs[i] = w.next()
		}
		p.Produce(recs...)
		all = append(all, recs...)
		select {
		case <-crashed:
			m.Close()
			crashes.Add(1)
			m = start()
		default:
		}
	}
	end := all[len(all)-1].Offset + 1
	deadline := time.Now().Add(60 * time.Second)
	for {
		done := true
		for _, d := range []projection.Definition{byEmail, byID} {
			off, ok, err := s.led.Offset(ctx, d.Name, 1)
			if err != nil || !ok || off < end {
				done = false
			}
		}
		if done {
			break
		}
		select {
		case <-crashed:
			m.Close()
			crashes.Add(1)
			m = start()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("generations did not reach the end of the topic")
		}
	}
	m.Close()
	t.Logf("%d records, %d crashes", len(all), crashes.Load())
	if crashes.Load() == 0 {
		t.Fatal("no crash happened: the test proved nothing")
	}

	for _, def := range []projection.Definition{byEmail, byID} {
		marked := s.rdb.Exists(ctx, ledger.IndexFormatKey(def.Name, 1)).Val() == 1
		if marked == legacy[def.Name] {
			t.Errorf("%s: bucketed-layout mark %v, per-key layout %v", def.Name, marked, legacy[def.Name])
		}
		got := s.matchesModel(t, def, all)

		// A fresh replay into generation 2.
		tg, _ := fanout.CompileTarget(def.Name, 2, def)
		rw := projector.NewWriter(s.pub, s.led)
		_, err := backfill.Replay(ctx, backfill.ReplayConfig{
			KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: rw, BatchSize: 500,
		}, tg, p.Topic, workflows.BackfillProgress{EndOffset: end}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := rw.IndexCacheEntries(); n != 0 {
			t.Errorf("Replay left %d index entries in memory (its live consumer may run elsewhere)", n)
		}
		fresh, err := prodtest.ReadGeneration(ctx, s.rdb, def.Name, 2)
		if err != nil {
			t.Fatal(err)
		}
		if d := prodtest.Diff(got, fresh); d != "" {
			t.Errorf("%s: crashed generation differs from a fresh replay:\n%s", def.Name, d)
		}
	}
}

// TestTwoWritersOneGeneration runs two consumers (two cache-producer
// replicas during a rollout, or a zombie next to its replacement) on the same
// generations at once, over the same random workload, each restarted at
// random. Their transactions race on each generation's offset; the loser of
// each race re-reads it and drops what the winner wrote. At the end each
// generation holds exactly the model's state, every record was written once
// (no version repeats in the change stream, none goes backwards), and the
// dead letters are recorded once.
func TestTwoWritersOneGeneration(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	w := newWorkload(p, rand.New(rand.NewPCG(seed, 3)))
	gens := []fanout.Generation{s.gen(t, byEmail, 1, p.Topic), s.gen(t, byID, 1, p.Topic)}
	rnd := rand.New(rand.NewPCG(seed, 5))
	var failures, skipped atomic.Int64
	var writers []*projector.Writer
	start := func(batch int) *fanout.Manager {
		wr := projector.NewWriter(s.pub, s.led, projector.WithIndexCache([]int{projector.DefaultIndexCacheEntries, 5}[rnd.IntN(2)]))
		writers = append(writers, wr)
		m, err := fanout.NewManager(fanout.Config{
			KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: wr,
			BatchSize: batch, DrainTimeout: time.Millisecond, Unclaimed: true,
			Observer: raceCounter{failures: &failures, skipped: &skipped},
		})
		if err != nil {
			t.Fatal(err)
		}
		m.Update(ctx, gens)
		return m
	}
	a, b := start(1+rnd.IntN(30)), start(1+rnd.IntN(30))
	var all []*kgo.Record
	for round := range 20 {
		recs := make([]*kgo.Record, 150)
		for i := range recs {
			recs[i] = w.next()
		}
		p.Produce(recs...)
		all = append(all, recs...)
		switch round % 5 {
		case 1:
			a.Close()
			a = start(1 + rnd.IntN(30))
		case 3:
			b.Close()
			b = start(1 + rnd.IntN(30))
		}
	}
	end := all[len(all)-1].Offset + 1
	s.waitOffset(t, byEmail, 1, end)
	s.waitOffset(t, byID, 1, end)
	var cached int64
	for _, wr := range writers {
		cached += wr.IndexCacheEntries()
	}
	if cached == 0 {
		t.Error("no writer held index entries in memory: the cache was never used")
	}
	a.Close()
	b.Close()
	var conflicts int64
	for _, wr := range writers {
		conflicts += wr.Conflicts()
	}
	t.Logf("%d records, two writers: %d lost transactions planned again, %d records found written by the other, %d failures retried",
		len(all), conflicts, skipped.Load(), failures.Load())
	if conflicts+skipped.Load() == 0 {
		t.Fatal("the two writers never met: the test proved nothing")
	}

	for _, def := range []projection.Definition{byEmail, byID} {
		s.matchesModel(t, def, all)
	}
}

// raceCounter counts what a Manager reports of another writer's work.
type raceCounter struct {
	fanout.NopObserver
	failures, skipped *atomic.Int64
}

func (c raceCounter) Batch(_ projector.Target, st projector.Stats, _ time.Duration) {
	c.skipped.Add(int64(st.Skipped))
}
func (c raceCounter) Failure(string) { c.failures.Add(1) }

// matchesModel checks generation 1 of def against the model of all: the
// same values and versions, every record written once (no version repeats
// in the change stream) and one dead letter per bad record. It returns what
// Redis holds.
func (s *stack) matchesModel(t *testing.T, def projection.Definition, all []*kgo.Record) map[string]prodtest.Value {
	t.Helper()
	ctx := context.Background()
	model := prodtest.NewModel(t, def)
	for _, r := range all {
		model.Apply(r.Offset, string(r.Key), r.Value)
	}
	got, err := prodtest.ReadGeneration(ctx, s.rdb, def.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("%s differs from the model:\n%s", def.Name, d)
	}
	if err := prodtest.StreamWrittenOnce(ctx, s.rdb, def.Name, 1); err != nil {
		t.Errorf("%s: %v", def.Name, err)
	}
	dead, _ := s.rdb.XLen(ctx, ledger.DeadLetterKey(def.Name, 1)).Result()
	if int(dead) != model.Dead {
		t.Errorf("%s: %d dead letters, model says %d", def.Name, dead, model.Dead)
	}
	return got
}

// TestTopicCreatedLater checks that a generation whose topic does not exist
// yet is consumed once the topic appears, and that the manager reports the
// failing fetches meanwhile without stopping.
func TestTopicCreatedLater(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	m := s.manager(t, projector.NewWriter(s.pub, s.led), 100)
	defer m.Close()
	m.Update(ctx, []fanout.Generation{s.gen(t, byID, 1, "distcache.users")})
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		off, ok, _ := s.led.Offset(ctx, byID.Name, 1)
		return ok && off == 0
	}, "offset initialised before the topic exists")
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	p.Produce(p.Upsert("1", user("1", "a@x.io", "A", "active")))
	s.waitOffset(t, byID, 1, 1)
	if n, _ := s.rdb.Exists(ctx, distcache.ValueKey(byID.Name, 1, "user:1")).Result(); n != 1 {
		t.Error("record of the late topic not written")
	}
}

// TestRedisOutage checks that a write that fails while Redis is down is
// retried, that the manager reports itself unhealthy meanwhile (readiness),
// and that it recovers without a restart once Redis is back.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	r := devstacktest.Redis(t)
	k := devstacktest.Kafka(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer rdb.Close()
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{rdb: rdb, kafka: k.Addr, pub: pub, led: ledger.New(rdb, 0)}
	ctx := context.Background()
	p := prodtest.NewProducer(t, k.Addr, "distcache", "users")
	m := s.manager(t, projector.NewWriter(pub, s.led), 100)
	defer m.Close()
	m.Update(ctx, []fanout.Generation{s.gen(t, byID, 1, p.Topic)})
	p.Produce(p.Upsert("1", user("1", "a@x.io", "A", "active")))
	s.waitOffset(t, byID, 1, 1)
	if !m.Healthy() {
		t.Fatal("unhealthy before the outage")
	}

	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	p.Produce(p.Upsert("2", user("2", "b@x.io", "B", "active")))
	devstacktest.Eventually(t, 20*time.Second, func() bool { return !m.Healthy() }, "manager reports the failing writes")
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool { return m.Healthy() }, "manager healthy again")
	s.waitOffset(t, byID, 1, 2)
	if n, _ := rdb.Exists(ctx, distcache.ValueKey(byID.Name, 1, "user:2")).Result(); n != 1 {
		t.Error("the record produced during the outage was not written after it")
	}
}

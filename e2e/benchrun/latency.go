package benchrun

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
)

// tracker matches committed (item, seq) pairs with the moment a stage first shows them.
//
// A stage can show a commit before its writer has recorded it: the writer takes the commit time
// when COMMIT has returned to it, and by then the publisher may already have read the row and the
// broker watcher received it. Such a sighting must not be lost: it was once, and the commit then
// waited until the item's next update was seen (seconds later at 10,000/s, the run's end at
// 1,000/s), which made commit → broker's p99.9 seconds while the edge's was milliseconds. So
// the tracker keeps the highest seq seen of each item and when; a commit added at or below it
// was seen no later than its commit time and counts as 0 (early counts them).
type tracker struct {
	mu      sync.Mutex
	pending map[int64][]commit
	last    map[int64]int64 // the highest seq seen of each item
	lat     []time.Duration
	unseen  int
	early   int // commits seen before their writer recorded them (latency counted as 0)
}

type commit struct {
	seq int64
	at  time.Time
}

func newTracker() *tracker { return &tracker{pending: map[int64][]commit{}, last: map[int64]int64{}} }

func (t *tracker) add(id, seq int64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seen, ok := t.last[id]; ok && seen >= seq {
		t.lat = append(t.lat, 0)
		t.early++
		return
	}
	t.pending[id] = append(t.pending[id], commit{seq, at})
}

// seen records that item id shows seq (and so every commit of it up to seq) at now.
func (t *tracker) seen(id, seq int64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq > t.last[id] {
		t.last[id] = seq
	}
	p := t.pending[id]
	n := 0
	for n < len(p) && p[n].seq <= seq {
		t.lat = append(t.lat, max(0, now.Sub(p[n].at)))
		n++
	}
	if n == len(p) {
		delete(t.pending, id)
	} else if n > 0 {
		t.pending[id] = p[n:]
	}
}

func (t *tracker) ids(buf []int64) []int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	buf = buf[:0]
	for id := range t.pending {
		buf = append(buf, id)
	}
	return buf
}

// Dist is a latency distribution's summary.
type Dist struct {
	N              int
	P50, P99, P999 time.Duration
	Max            time.Duration
	Unseen         int
	Early          int // commits the stage showed before their writer recorded them (counted as 0)
}

func summarize(lat []time.Duration, unseen int) Dist {
	s := slices.Clone(lat)
	slices.Sort(s)
	if len(s) == 0 {
		return Dist{Unseen: unseen}
	}
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return Dist{N: len(s), P50: at(0.5), P99: at(0.99), P999: at(0.999), Max: s[len(s)-1], Unseen: unseen}
}

// LatencyRun is one timed run at a target rate.
type LatencyRun struct {
	Target   int
	Achieved float64 // committed events/s
	Edge     Dist    // commit → the edge's local value shows it
	Redis    Dist    // commit → the generation's change stream holds it
	Broker   Dist    // commit → the broker holds it (the core-publisher's share)
	Samples  []time.Duration
	// CPU is each process's CPU time from the first timed write until the last commit reached
	// the edge (see Procs), Events the commits of the run.
	CPU    map[string]time.Duration
	Events int64
	// Statements are PostgreSQL's top statements of the run (nil without pg_stat_statements).
	Statements []Statement
	// Waits are PostgreSQL's active sessions' states, sampled (nil unless asked for).
	Waits []WaitSample
	// Fetched is what the broker watcher (a read-committed consumer, as the cache-producer is)
	// fetched in the run: the bytes a consumer pays for each event.
	Fetched FetchStats
}

// FetchStats counts a consumer's fetched record batches (kgo.HookFetchBatchRead).
type FetchStats struct {
	Batches, Records          int64
	CompressedBytes, RawBytes int64 // on the wire; after decompression
}

// fetchCounter is the broker watcher's kgo.HookFetchBatchRead.
type fetchCounter struct {
	mu sync.Mutex
	st FetchStats
}

var _ kgo.HookFetchBatchRead = (*fetchCounter)(nil)

func (c *fetchCounter) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	c.mu.Lock()
	c.st.Batches++
	c.st.Records += int64(m.NumRecords)
	c.st.CompressedBytes += int64(m.CompressedBytes)
	c.st.RawBytes += int64(m.UncompressedBytes)
	c.mu.Unlock()
}

func (c *fetchCounter) take() FetchStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	c.st = FetchStats{}
	return st
}

// measureLatency drives rate updates/s for d into the core table and times each one at the edge
// (polling its local value, in process) and at Redis (tailing the change stream).
//
// onChange, when not nil, is the edge's WithOnChange hook: measureLatency installs its handler
// there for the run.
func measureLatency(ctx context.Context, pool *pgxpool.Pool, rdb *redis.Client, edge *distcache.Client, onChange *atomic.Pointer[func(distcache.AppliedChange)],
	broker string, procs []pipeline.Proc, items, rate int, d time.Duration, waits bool) (LatencyRun, error) {
	run := LatencyRun{Target: rate}
	edgeT, redisT, brokerT := newTracker(), newTracker(), newTracker()
	gen, err := rdb.Get(ctx, distcache.PointerKey(pipeline.Projection.Name)).Int64()
	if err != nil {
		return run, fmt.Errorf("pointer: %w", err)
	}
	stream := distcache.StreamKey(pipeline.Projection.Name, gen)
	last, err := rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil {
		return run, err
	}
	pos := "0-0"
	if len(last) > 0 {
		pos = last[0].ID
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var committed atomic.Int64
	var writeErr atomic.Pointer[error]

	// Stage 1 watcher: the change stream.
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr})
		defer sc.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			res, err := sc.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, pos}, Count: 1000, Block: 100 * time.Millisecond}).Result()
			now := time.Now()
			if err != nil {
				continue
			}
			for _, s := range res {
				for _, m := range s.Messages {
					pos = m.ID
					for k, v := range streamChanges(m.Values) {
						id, err := strconv.ParseInt(strings.TrimPrefix(k, "item-"), 10, 64)
						if err != nil {
							continue
						}
						if seq, ok := pipeline.Seq([]byte(v)); ok {
							redisT.seen(id, seq, now)
						}
					}
				}
			}
		}
	}()
	// Stage 0 watcher: the topic, read from its end as the run starts.
	fetched := &fetchCounter{}
	kc, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.WithHooks(fetched),
		kgo.ConsumeTopics(events.Topic(events.DefaultTopicPrefix, pipeline.Projection.Model)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.FetchIsolationLevel(kgo.ReadCommitted())) // as the cache-producer reads
	if err != nil {
		return run, err
	}
	defer kc.Close()
	// The consumer must have its end offset before the first write: a metadata round trip and an
	// empty fetch.
	pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	kc.PollFetches(pctx)
	pcancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			fs := kc.PollFetches(fctx)
			cancel()
			now := time.Now()
			select {
			case <-stop:
				return
			default:
			}
			fs.EachRecord(func(r *kgo.Record) {
				id, err := strconv.ParseInt(string(r.Key), 10, 64)
				if err != nil {
					return
				}
				if seq, ok := pipeline.Seq(r.Value); ok {
					brokerT.seen(id, seq, now)
				}
			})
		}
	}()
	// Stage 2 watcher: the edge tells when it applied each change (WithOnChange, on its tail
	// goroutine): the item's value is then in the edge's memory and read at once. Polling the
	// items in flight instead took a fifth of a core at 10,000 events/s (62% of the bench's own
	// CPU), from the pipeline it measured. A slow sweep of the items still in flight (every
	// 100 ms) catches values that reach the edge without a change of the stream (a refetch).
	// Without onChange (nil), the sweep is the watcher: every 100 µs, or after a pause as long
	// as the last sweep took when that is longer.
	pollEvery := 100 * time.Microsecond
	if onChange != nil {
		pollEvery = 100 * time.Millisecond
		fn := func(c distcache.AppliedChange) {
			if c.Projection != pipeline.Projection.Name || !c.Updated {
				return // not held: the sweep reads it
			}
			id, err := strconv.ParseInt(strings.TrimPrefix(c.Key, "item-"), 10, 64)
			if err != nil {
				return
			}
			e, err := edge.GetEntry(ctx, c.Projection, c.Key) // held: from memory
			if err != nil {
				return
			}
			if seq, ok := pipeline.Seq(e.Value); ok {
				edgeT.seen(id, seq, time.Now())
			}
		}
		onChange.Store(&fn)
		defer onChange.Store(nil)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ids []int64
		for {
			select {
			case <-stop:
				return
			default:
			}
			sweep := time.Now()
			ids = edgeT.ids(ids)
			for _, id := range ids {
				e, err := edge.GetEntry(ctx, pipeline.Projection.Name, pipeline.Key(int(id)))
				if err != nil {
					continue
				}
				if seq, ok := pipeline.Seq(e.Value); ok {
					edgeT.seen(id, seq, time.Now())
				}
			}
			select {
			case <-stop:
			case <-time.After(max(pollEvery, time.Since(sweep))):
			}
		}
	}()

	// Warm-up: one probe commit, seen by every watcher, so all three are live before the timed
	// writes start (a watcher that joins late would count its own start-up as latency).
	if err := warmUp(ctx, pool, []*tracker{brokerT, redisT, edgeT}); err != nil { // in stageNames order
		close(stop)
		wg.Wait()
		return run, err
	}

	// Writers: 4 connections, each committing a batch (one event per row) every 5 ms, sized to
	// what the schedule owes so a slow commit is caught up by the next batch (at most 250 rows).
	const writers = 4
	tick := 5 * time.Millisecond
	wctx, wcancel := context.WithTimeout(ctx, d)
	defer wcancel()
	var ww sync.WaitGroup
	stmts := resetStatements(ctx, pool)
	meter := startCPU(procs)
	fetched.take()
	waitsDone := make(chan []WaitSample, 1)
	stopWaits := make(chan struct{})
	if waits {
		go func() { waitsDone <- sampleWaits(ctx, pool, stopWaits) }()
	} else {
		waitsDone <- nil
	}
	t0 := time.Now()
	for w := range writers {
		ww.Add(1)
		go func() {
			defer ww.Done()
			t := time.NewTicker(tick)
			defer t.Stop()
			sent := 0
			for {
				select {
				case <-wctx.Done():
					return
				case <-t.C:
				}
				due := int(float64(rate) * time.Since(t0).Seconds() / writers)
				n := min(due-sent, 250, items/writers/2)
				if n <= 0 {
					continue
				}
				sent += n
				ids := make([]int64, 0, n)
				for len(ids) < n { // distinct items, from this writer's quarter so writers never wait on each other's rows
					id := int64(1 + w + writers*rand.IntN(items/writers))
					if !slices.Contains(ids, id) {
						ids = append(ids, id)
					}
				}
				got, err := pipeline.Bump(wctx, pool, ids)
				at := time.Now()
				if err != nil {
					if wctx.Err() == nil {
						writeErr.CompareAndSwap(nil, &err)
					}
					continue
				}
				for id, seq := range got {
					brokerT.add(id, seq, at)
					redisT.add(id, seq, at)
					edgeT.add(id, seq, at)
				}
				committed.Add(int64(len(got)))
			}
		}()
	}
	ww.Wait()
	elapsed := time.Since(t0)
	// Let the last commits arrive (bounded), then stop the watchers.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		edgeT.mu.Lock()
		redisT.mu.Lock()
		done := len(edgeT.pending) == 0 && len(redisT.pending) == 0 // the broker's stage comes first
		redisT.mu.Unlock()
		edgeT.mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	run.CPU = meter.stop()
	close(stopWaits)
	run.Waits = <-waitsDone
	run.Events = committed.Load()
	run.Fetched = fetched.take()
	if stmts {
		if run.Statements, err = topStatements(ctx, pool, 8); err != nil {
			close(stop)
			wg.Wait()
			return run, err
		}
	}
	close(stop)
	wg.Wait()
	if e := writeErr.Load(); e != nil {
		return run, fmt.Errorf("write: %w", *e)
	}
	for _, t := range []*tracker{edgeT, redisT, brokerT} {
		for _, p := range t.pending {
			t.unseen += len(p)
		}
	}
	run.Achieved = float64(committed.Load()) / elapsed.Seconds()
	run.Edge = summarize(edgeT.lat, edgeT.unseen)
	run.Redis = summarize(redisT.lat, redisT.unseen)
	run.Broker = summarize(brokerT.lat, brokerT.unseen)
	run.Edge.Early, run.Redis.Early, run.Broker.Early = edgeT.early, redisT.early, brokerT.early
	run.Samples = edgeT.lat
	if run.Edge.N == 0 {
		return run, errors.New("no commit reached the edge")
	}
	return run, nil
}

var stageNames = []string{"broker", "Redis change stream", "edge"}

// warmUp commits updates of item 1, one a second, until every tracker has seen one (a watcher
// that positions itself after a probe was written sees the next one), then clears their samples.
func warmUp(ctx context.Context, pool *pgxpool.Pool, ts []*tracker) error {
	deadline := time.Now().Add(time.Minute)
	var next time.Time
	for {
		if now := time.Now(); now.After(next) {
			got, err := pipeline.Bump(ctx, pool, []int64{1})
			if err != nil {
				return fmt.Errorf("warm-up write: %w", err)
			}
			at := time.Now()
			for _, t := range ts {
				t.add(1, got[1], at)
			}
			next = at.Add(time.Second)
		}
		done := true
		for _, t := range ts {
			t.mu.Lock()
			done = done && len(t.pending) == 0
			t.mu.Unlock()
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			var missing []string
			for i, t := range ts {
				t.mu.Lock()
				if len(t.pending) > 0 {
					missing = append(missing, stageNames[i])
				}
				t.mu.Unlock()
			}
			return fmt.Errorf("warm-up: no probe write reached %v within a minute", missing)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, t := range ts {
		t.mu.Lock()
		t.lat = t.lat[:0]
		t.early = 0
		t.mu.Unlock()
	}
	return nil
}

// streamChanges returns the key → encoded value pairs of one change-stream entry. A single write
// is an entry with fields k (key) and v (or d) (value); a batch is one entry whose fields are the
// keys themselves.
func streamChanges(fields map[string]any) map[string]string {
	out := map[string]string{}
	if k, ok := fields["k"].(string); ok {
		v, _ := fields["v"].(string)
		if v == "" {
			v, _ = fields["d"].(string)
		}
		out[k] = v
		return out
	}
	_ = distcache.EachStreamChange(fields, func(k, v string) { out[k] = v })
	return out
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/libs/distcache"
)

// driver drives updates into the core database and measures what the edge sees.
type driver struct {
	cfg   Config
	pool  *pgxpool.Pool
	users int
	svcs  *pipeline.Services
	http  *http.Client

	updates atomic.Int64
	mu      sync.Mutex
	samples []time.Duration
	unseen  int

	startPub, startProd float64
	startEdge           uint64
	endPub, endProd     float64
	endEdge             uint64
	startApplied        uint64
	endApplied          uint64
	hits, reads         uint64
}

func newDriver(cfg Config, pool *pgxpool.Pool, users int, svcs *pipeline.Services) *driver {
	return &driver{cfg: cfg, pool: pool, users: users, svcs: svcs,
		http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

// The sampler times updates of users 1..sampleIDs; background updates use the others, so a
// background write never overwrites a sampled marker. Readers favour the hot users.
const (
	sampleIDs = 200
	hotIDs    = 2000
)

func email(id int) string { return fmt.Sprintf("user%d@example.com", id) }

type counters struct {
	pub, prod float64
	edge      uint64 // change-stream entries received
	applied   uint64 // of which applied in place to held keys
	hits      uint64
	reads     uint64
	gen       int64
}

func (d *driver) counters(ctx context.Context) counters {
	var c counters
	c.pub, _ = pipeline.Metric(ctx, d.svcs.PublisherAddr, pipeline.MetricPublisherEvents)
	c.prod, _ = pipeline.Metric(ctx, d.svcs.ProducerAddr, pipeline.MetricProducerRecords)
	if st, err := d.edgeStats(ctx); err == nil {
		for _, p := range st.Projections {
			c.edge += p.ChangesSeen
			c.applied += p.Updates
			c.hits += p.Hits
			c.reads += p.Hits + p.Misses
			if p.Name == "users_by_email" {
				c.gen = p.Generation
			}
		}
	}
	return c
}

func (d *driver) run(ctx context.Context, out io.Writer) error {
	if d.users <= sampleIDs {
		return fmt.Errorf("demo needs more than %d users, has %d", sampleIDs, d.users)
	}
	start := d.counters(ctx)
	d.startPub, d.startProd, d.startEdge, d.startApplied = start.pub, start.prod, start.edge, start.applied

	runCtx, cancel := context.WithTimeout(ctx, d.cfg.Period)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	wg.Add(3)
	go func() { defer wg.Done(); errc <- d.updateLoop(runCtx) }()
	go func() { defer wg.Done(); d.sampleLoop(runCtx) }()
	go func() { defer wg.Done(); d.readLoop(runCtx) }()

	fmt.Fprintf(out, "\n  %5s  %10s  %12s  %11s  %10s  %8s  %8s  %6s  %4s\n",
		"t", "core upd/s", "publisher/s", "producer/s", "edge chg/s", "p50", "p99", "hit%", "gen")
	prev, prevT := start, time.Now()
	prevUpd := int64(0)
	t0 := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
loop:
	for {
		select {
		case <-runCtx.Done():
			break loop
		case <-tick.C:
			now := time.Now()
			c := d.counters(ctx)
			dt := now.Sub(prevT).Seconds()
			upd := d.updates.Load()
			p50, p99, _ := d.percentiles()
			hit := 0.0
			if c.reads > 0 {
				hit = 100 * float64(c.hits) / float64(c.reads)
			}
			fmt.Fprintf(out, "  %4.0fs  %10.0f  %12.0f  %11.0f  %10.0f  %8s  %8s  %5.1f%%  %4d\n",
				now.Sub(t0).Seconds(), float64(upd-prevUpd)/dt, (c.pub-prev.pub)/dt, (c.prod-prev.prod)/dt,
				float64(c.edge-prev.edge)/dt, ms(p50), ms(p99), hit, c.gen)
			prev, prevT, prevUpd = c, now, upd
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return err
		}
	}
	// Let the last changes land before the closing count: wait (at most 5 s) until the publisher
	// has relayed every committed update. The edge applies only the changes of keys it holds, so
	// its count is not a completion signal.
	deadline := time.Now().Add(5 * time.Second)
	end := d.counters(ctx)
	for end.pub < d.startPub+float64(d.updates.Load()) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		end = d.counters(ctx)
	}
	end = d.counters(ctx) // once more, with the edge's and the producer's last changes
	d.endPub, d.endProd, d.endEdge, d.endApplied, d.hits, d.reads = end.pub, end.prod, end.edge, end.applied, end.hits, end.reads
	return nil
}

// updateLoop commits background updates at the configured rate, spread over a few connections.
func (d *driver) updateLoop(ctx context.Context) error {
	ids := make(chan int, 64)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				_, err := d.pool.Exec(ctx, "UPDATE users SET name = $1, updated_at = now() WHERE id = $2",
					fmt.Sprintf("User %d v%d", id, rand.IntN(1_000_000)), id)
				if err != nil {
					if ctx.Err() == nil {
						e := fmt.Errorf("core database update: %w", err)
						firstErr.CompareAndSwap(nil, &e)
					}
					continue
				}
				d.updates.Add(1)
			}
		}()
	}
	interval := time.Second / time.Duration(max(1, d.cfg.Rate))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	hot := min(hotIDs, d.users)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			id := sampleIDs + 1 + rand.IntN(d.users-sampleIDs)
			if rand.IntN(4) > 0 && hot > sampleIDs+1 {
				id = sampleIDs + 1 + rand.IntN(hot-sampleIDs)
			}
			select {
			case ids <- id:
			default: // the database is behind: skip rather than queue without bound
			}
		}
	}
	close(ids)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return *e
	}
	return nil
}

// sampleLoop times one update at a time: read the key at the edge (so it is held), commit a
// marker, then poll the edge until it answers with the marker.
func (d *driver) sampleLoop(ctx context.Context) {
	tick := time.NewTicker(40 * time.Millisecond)
	defer tick.Stop()
	seq := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		seq++
		id := 1 + rand.IntN(sampleIDs)
		key := email(id)
		if _, err := d.edgeName(ctx, key); err != nil {
			continue
		}
		marker := fmt.Sprintf("sample-%d-%d", seq, time.Now().UnixNano())
		if _, err := d.pool.Exec(ctx, "UPDATE users SET name = $1, updated_at = now() WHERE id = $2", marker, id); err != nil {
			continue
		}
		committed := time.Now()
		d.updates.Add(1)
		deadline := committed.Add(5 * time.Second)
		seen := false
		for time.Now().Before(deadline) {
			name, err := d.edgeName(context.Background(), key)
			if err == nil && name == marker {
				seen = true
				break
			}
			time.Sleep(500 * time.Microsecond)
		}
		d.mu.Lock()
		if seen {
			d.samples = append(d.samples, time.Since(committed))
		} else {
			d.unseen++
		}
		d.mu.Unlock()
	}
}

// readLoop reads users and orgs from the edge, mostly hot ones, as an edge's callers would.
func (d *driver) readLoop(ctx context.Context) {
	hot := min(hotIDs, d.users)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		id := 1 + rand.IntN(hot)
		if rand.IntN(10) == 0 {
			id = 1 + rand.IntN(d.users)
		}
		_, _ = d.edgeName(ctx, email(id))
	}
}

func (d *driver) edgeName(ctx context.Context, key string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr(d.cfg.Ports.Edge)+"/v1/users_by_email/"+key, nil)
	if err != nil {
		return "", err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return "", fmt.Errorf("edge: HTTP %d", resp.StatusCode)
	}
	var v struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", err
	}
	return v.Name, nil
}

// edgeStats reads the edge service's /stats.
func (d *driver) edgeStats(ctx context.Context) (distcache.Stats, error) {
	var st distcache.Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr(d.cfg.Ports.Edge)+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("edge /stats: HTTP %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (d *driver) percentiles() (p50, p99, maxd time.Duration) {
	d.mu.Lock()
	s := append([]time.Duration(nil), d.samples...)
	d.mu.Unlock()
	if len(s) == 0 {
		return 0, 0, 0
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

func (d *driver) fill(sum *Summary) {
	sum.Updates = d.updates.Load()
	sum.PublisherEvents = d.endPub - d.startPub
	sum.ProducerEvents = d.endProd - d.startProd
	sum.EdgeChanges = d.endEdge - d.startEdge
	sum.EdgeUpdates = d.endApplied - d.startApplied
	sum.P50, sum.P99, sum.Max = d.percentiles()
	d.mu.Lock()
	sum.Samples, sum.Unseen = len(d.samples), d.unseen
	d.mu.Unlock()
	if d.reads > 0 {
		sum.HitRatio = float64(d.hits) / float64(d.reads)
	}
}

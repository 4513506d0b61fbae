package benchrun

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
)

// edgesRun is one run of E edges following one projection.
type edgesRun struct {
	Edges     int
	Replicas  bool      // tails spread over the replicas (else all on the primary)
	Changes   int       // changes written
	Delivered int64     // changes × edges that reached an edge
	CPUNodes  []float64 // Redis CPU seconds per node (primary first) over the run
	IdleNodes []float64 // Redis CPU seconds per second per node, the edges following and no change written
	Dur       float64   // seconds of the run (writes and the wait for their deliveries)
	IdleEdge  float64   // Redis CPU seconds per second per idle edge, every node (the writer alone's idle taken off)
	CPUAll    float64   // Redis CPU seconds for the deliveries, every node (the writer's own share taken off)
	CPUMax    float64   // the same, of the busiest node
	Lat       Dist      // write → edge's WithOnChange
	Rate      float64   // achieved changes/s
}

// edgesBench starts a primary and cfg.Replicas replicas, then for each edge count runs the edges
// once with every tail on the primary and once with the tails spread over the replicas.
func edgesBench(ctx context.Context, cfg ScaleConfig, res *Result, say func(string, ...any)) error {
	dir := filepath.Join(cfg.RunDir, "edges")
	prim, err := devstack.StartRedis(ctx, devstack.RedisConfig{Dir: filepath.Join(dir, "primary"), Mode: devstack.Attached})
	if err != nil {
		return fmt.Errorf("start redis: %w", err)
	}
	defer prim.Stop()
	nodes := []*redis.Client{redis.NewClient(&redis.Options{Addr: prim.Addr, ReadTimeout: 30 * time.Second})}
	var replicaAddrs []string
	for i := range cfg.Replicas {
		r, err := devstack.StartRedis(ctx, devstack.RedisConfig{Dir: filepath.Join(dir, "replica"+strconv.Itoa(i)), ReplicaOf: prim.Addr, Mode: devstack.Attached})
		if err != nil {
			return fmt.Errorf("start replica: %w", err)
		}
		defer r.Stop()
		replicaAddrs = append(replicaAddrs, r.Addr)
		nodes = append(nodes, redis.NewClient(&redis.Options{Addr: r.Addr, ReadTimeout: 30 * time.Second}))
	}
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}()
	const proj = "fanout_probe"
	const keys = 1000
	pub, err := distcache.NewPublisher(nodes[0])
	if err != nil {
		return err
	}
	ch := make([]distcache.Change, keys)
	for i := range ch {
		ch[i] = distcache.Change{Key: scaleKey(i), Value: scaleValue, Version: 1, Op: distcache.OpSet}
	}
	if _, err := pub.Apply(ctx, proj, 1, ch); err != nil {
		return err
	}
	if err := pub.Cutover(ctx, proj, 1); err != nil {
		return err
	}
	version := int64(1)
	// The writer alone (no edge): its own Redis CPU per change (the script, the stream, the
	// replication), taken off every run's, so that what is left is the cost of the deliveries.
	writer, err := edgesOnce(ctx, cfg, pub, nodes, prim.Addr, replicaAddrs, proj, keys, 0, false, &version)
	if err != nil {
		return fmt.Errorf("writer alone: %w", err)
	}
	say("bench-scale: the writer alone: %d changes at %.0f/s; Redis CPU %.2f µs per change, %.0f µs/s idle (all nodes)", writer.Changes, writer.Rate, 1e6*sum(writer.CPUNodes)/float64(writer.Changes), 1e6*sum(writer.IdleNodes))
	var runs []edgesRun
	for _, e := range cfg.Edges {
		for _, spread := range []bool{false, true} {
			if spread && len(replicaAddrs) == 0 {
				continue
			}
			r, err := edgesOnce(ctx, cfg, pub, nodes, prim.Addr, replicaAddrs, proj, keys, e, spread, &version)
			if err != nil {
				return fmt.Errorf("%d edges: %w", e, err)
			}
			r.deliveryCPU(writer)
			where := "primary"
			if spread {
				where = fmt.Sprintf("%d replicas", len(replicaAddrs))
			}
			say("bench-scale: %d edges, tails on the %s: %d changes at %.0f/s, %d deliveries; Redis CPU %.2f µs per delivery (busiest node %.2f), %.1f µs/s per idle edge; propagation p50 %.2fms p99 %.2fms; load %s",
				e, where, r.Changes, r.Rate, r.Delivered, 1e6*r.CPUAll/float64(r.Delivered), 1e6*r.CPUMax/float64(r.Delivered), 1e6*r.IdleEdge, ms(r.Lat.P50), ms(r.Lat.P99), loadAvg())
			runs = append(runs, r)
		}
	}
	res.Rows = append(res.Rows, edgesRows(runs, len(replicaAddrs), cfg.EdgeRate)...)
	return nil
}

func sum(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

// deliveryCPU sets CPUAll, CPUMax and IdleEdge from a model of Redis's CPU on each node: its CPU
// with the edges idle (per second), plus the writer's own per change (the writer alone's run, its
// idle taken off), plus the deliveries'. What is left once the first two are taken off is the
// deliveries' cost.
func (r *edgesRun) deliveryCPU(writer edgesRun) {
	r.CPUAll, r.CPUMax, r.IdleEdge = 0, 0, 0
	for i, c := range r.CPUNodes {
		if i < len(r.IdleNodes) {
			c -= r.IdleNodes[i] * r.Dur
		}
		if i < len(writer.CPUNodes) && writer.Changes > 0 {
			wc := (writer.CPUNodes[i] - writer.IdleNodes[i]*writer.Dur) / float64(writer.Changes)
			c -= max(wc, 0) * float64(r.Changes)
			if r.Edges > 0 {
				r.IdleEdge += max(r.IdleNodes[i]-writer.IdleNodes[i], 0) / float64(r.Edges)
			}
		}
		c = max(c, 0)
		r.CPUAll += c
		r.CPUMax = max(r.CPUMax, c)
	}
}

// edgesIdle is how long the edges follow with no change, to measure their idle cost.
const edgesIdle = 3 * time.Second

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// edgesRows pairs each edge count's primary run with its replicas run.
func edgesRows(runs []edgesRun, replicas, rate int) []Row {
	var rows []Row
	for _, p := range runs {
		if p.Replicas || p.Delivered == 0 {
			continue
		}
		var s *edgesRun
		for i := range runs {
			if runs[i].Replicas && runs[i].Edges == p.Edges && runs[i].Delivered > 0 {
				s = &runs[i]
			}
		}
		k := strconv.Itoa(p.Edges)
		cpu := 1e6 * p.CPUAll / float64(p.Delivered)
		row := Row{Key: "scale_edges_cpu_" + k, Measure: fmt.Sprintf("Redis CPU per delivered change (writer's own and idle taken off), %d edges on one primary (%d changes/s asked, %.0f/s achieved)", p.Edges, rate, p.Rate), Value: cpu, Unit: "µs"}
		idle := Row{Key: "scale_edges_idle_" + k, Measure: fmt.Sprintf("Redis CPU per idle edge (following, no change), %d edges on one primary", p.Edges), Value: 1e6 * p.IdleEdge, Unit: "µs/s"}
		lat := Row{Key: "scale_edges_p99_" + k, Measure: fmt.Sprintf("propagation p99 (write → edge), %d edges on one primary", p.Edges), Value: ms(p.Lat.P99), Unit: "ms"}
		if p.Lat.Unseen > 0 {
			lat.Measure += fmt.Sprintf(" (%d deliveries not seen within 10 s)", p.Lat.Unseen)
		}
		if s != nil {
			sc, sb := 1e6*s.CPUAll/float64(s.Delivered), 1e6*s.CPUMax/float64(s.Delivered)
			row.Peer = fmt.Sprintf("tails over %d replicas (%.0f/s achieved): %.2f µs on all nodes, %.2f µs on the busiest", replicas, s.Rate, sc, sb)
			row.Ratio = fmt.Sprintf("busiest node %.2f×", sb/cpu)
			idle.Peer = fmt.Sprintf("tails over %d replicas: %.1f µs/s", replicas, 1e6*s.IdleEdge)
			idle.Ratio = ratio(s.IdleEdge, p.IdleEdge)
			lat.Peer = fmt.Sprintf("tails over %d replicas: p99 %.2f ms", replicas, ms(s.Lat.P99))
			if s.Lat.Unseen > 0 {
				lat.Peer += fmt.Sprintf(" (%d not seen)", s.Lat.Unseen)
			}
			lat.Ratio = ratio(ms(s.Lat.P99), ms(p.Lat.P99)) + " with replicas"
		}
		rows = append(rows, row, idle, lat)
	}
	return rows
}

// edgeProbe collects one edge's propagation delays.
type edgeProbe struct {
	mu  sync.Mutex
	lat []time.Duration
	n   int64
}

func edgesOnce(ctx context.Context, cfg ScaleConfig, pub *distcache.Publisher, nodes []*redis.Client, primary string, replicas []string,
	proj string, keys, edges int, spread bool, version *int64) (edgesRun, error) {
	run := edgesRun{Edges: edges, Replicas: spread}
	total := max(1, int(float64(cfg.EdgeRate)*cfg.EdgeDuration.Seconds()))
	// The marker (version base) tells that every tail is reading; the run's changes are
	// versions base+1 .. base+total.
	base := *version + 1
	*version = base + int64(total)
	sent := make([]atomic.Int64, total) // unix nanos of each change's write
	probes := make([]*edgeProbe, edges)
	clients := make([]*distcache.Client, edges)
	defer func() {
		_ = parallelRange(context.Background(), edges, 1, 32, func(i, _ int) error {
			if clients[i] != nil {
				_ = clients[i].Close(context.Background())
			}
			return nil
		})
	}()
	var addrs []string
	if spread {
		addrs = replicas
	}
	err := parallelRange(ctx, edges, 1, 16, func(i, _ int) error {
		p := &edgeProbe{}
		probes[i] = p
		c, err := distcache.New(ctx, distcache.WithAddrs(primary, addrs...), distcache.WithProjections(proj),
			distcache.WithReplicaTail(spread),
			distcache.WithOnChange(func(ac distcache.AppliedChange) {
				now := time.Now().UnixNano()
				j := ac.Version - base - 1
				if ac.Projection != proj || j < 0 || j >= int64(total) {
					return
				}
				at := sent[j].Load()
				if at == 0 {
					return
				}
				p.mu.Lock()
				p.lat = append(p.lat, time.Duration(now-at))
				p.n++
				p.mu.Unlock()
			}))
		clients[i] = c
		return err
	})
	if err != nil {
		return run, err
	}
	// Each tail must be reading before the first change: wait until every edge has seen a marker.
	if _, err := pub.Apply(ctx, proj, 1, []distcache.Change{{Key: scaleKey(0), Value: scaleValue, Version: base, Op: distcache.OpSet}}); err != nil {
		return run, err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool {
		for _, c := range clients {
			seen := false
			for _, ps := range c.Stats().Projections {
				if ps.Name == proj && ps.ChangesSeen > 0 {
					seen = true
				}
			}
			if !seen {
				return false
			}
		}
		return true
	}); err != nil {
		return run, fmt.Errorf("edges following: %w", err)
	}
	cpus := func() ([]float64, error) {
		out := make([]float64, len(nodes))
		for i, n := range nodes {
			var err error
			if out[i], err = redisCPU(ctx, n); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	// The edges idle (following, no change) for a while: Redis's CPU per second with them.
	idle0, err := cpus()
	if err != nil {
		return run, err
	}
	i0 := time.Now()
	if err := sleepCtx(ctx, edgesIdle); err != nil {
		return run, err
	}
	idle1, err := cpus()
	if err != nil {
		return run, err
	}
	idleDur := time.Since(i0).Seconds()
	for i := range nodes {
		run.IdleNodes = append(run.IdleNodes, (idle1[i]-idle0[i])/idleDur)
	}
	cpu0, err := cpus()
	if err != nil {
		return run, err
	}
	// The writer: one change at a time at EdgeRate, for EdgeDuration (fewer changes when the
	// machine cannot keep up).
	t0 := time.Now()
	end := t0.Add(cfg.EdgeDuration)
	tick := time.Second / time.Duration(max(1, cfg.EdgeRate))
	written := 0
	for j := range total {
		if d := time.Until(t0.Add(time.Duration(j) * tick)); d > 0 {
			if err := sleepCtx(ctx, d); err != nil {
				return run, err
			}
		}
		if j > 0 && time.Now().After(end) {
			break
		}
		v := base + int64(j) + 1
		sent[j].Store(time.Now().UnixNano())
		if _, err := pub.Apply(ctx, proj, 1, []distcache.Change{{Key: scaleKey(j % keys), Value: scaleValue, Version: v, Op: distcache.OpSet}}); err != nil {
			return run, err
		}
		written++
	}
	total = written
	run.Changes = total
	run.Rate = float64(total) / time.Since(t0).Seconds()
	want := int64(total) * int64(edges)
	delivered := func() int64 {
		var s int64
		for _, p := range probes {
			p.mu.Lock()
			s += p.n
			p.mu.Unlock()
		}
		return s
	}
	_ = waitFor(ctx, 10*time.Second, func() bool { return delivered() >= want }) // what did not arrive counts as unseen
	for i, n := range nodes {
		c, err := redisCPU(ctx, n)
		if err != nil {
			return run, err
		}
		run.CPUNodes = append(run.CPUNodes, c-cpu0[i])
	}
	run.Dur = time.Since(t0).Seconds()
	var all []time.Duration
	for _, p := range probes {
		p.mu.Lock()
		all = append(all, p.lat...)
		p.mu.Unlock()
	}
	run.Delivered = int64(len(all))
	run.Lat = summarize(all, int(want-run.Delivered))
	return run, nil
}

// waitFor polls cond every 20 ms until it holds or d has passed.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

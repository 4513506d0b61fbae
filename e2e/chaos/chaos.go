// Package chaos runs distcache's fault-injection scenario: the whole pipeline (package pipeline,
// with two cache-producer replicas and three redis-sentinels watching a Redis primary and its
// replica) under a steady write load into the core database, with two in-process edges (one
// reaching Redis through a TCP proxy, the other through the sentinels), while the core-publisher,
// the cache-producer replica that writes the projection (the other takes over; then it is paused
// past the group's session timeout and resumed), the Redis primary (a Sentinel failover), its
// replica, the broker and PostgreSQL are each killed with SIGKILL and restarted in turn, Redis
// loses all its data (FLUSHALL) while it runs, the primary restarts with its data removed, and the
// proxied edge's connection is cut. It then checks that nothing was lost: the final core rows,
// Redis's values and every edge's values agree (seq, and the edges' versions with Redis's); no
// edge ever returned an older version of a key than it had returned before; and the edges served
// their cached keys with zero errors throughout, Redis's outage included.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/tcpproxy"
)

// ErrLoss is wrapped by the error Run returns when a check failed.
var ErrLoss = errors.New("chaos: invariant violated")

// Config is one chaos run.
type Config struct {
	RepoDir, RunDir string
	Items           int           // rows in the sample table; every edge holds all of them
	Rate            int           // updates committed per second
	Down            time.Duration // how long each component stays dead
	Settle          time.Duration // load after each restart, before the next fault
	Converge        time.Duration // how long the final state may take to agree everywhere
	Out             io.Writer
}

// Short is the configuration of `make test`'s run (about a minute and a half of faults and load).
func Short(repo, run string) Config {
	return Config{RepoDir: repo, RunDir: run, Items: 2000, Rate: 200, Down: 3 * time.Second, Settle: 4 * time.Second, Converge: 3 * time.Minute}
}

// Fault is one injected fault and what followed it.
type Fault struct {
	Component string
	Down      time.Duration // killed → restarted and healthy (or connection restored)
	// Served is, for a fault the pipeline must ride through while it lasts (a producer takeover,
	// a Sentinel failover), killed → a fresh commit visible at both edges, before the restart.
	Served    time.Duration
	Recovery  time.Duration // healthy → a fresh commit visible at both edges
	Writes    int64         // updates committed while it was down
	WriteErrs int64         // updates that failed while it was down
}

// Report is what a run did and verified.
type Report struct {
	Faults                 []Fault
	Committed, WriteErrors int64
	Items                  int
	Checked                int // items compared in core, Redis and every edge
	RedisMismatch          int // items whose Redis value is not the committed one
	EdgeMismatch           []int
	Edges                  []pipeline.WatchStats
	ConvergedIn            time.Duration
	FirstMismatch          string
	Duration               time.Duration
}

// OK reports whether every invariant held.
func (r Report) OK() bool {
	if r.RedisMismatch != 0 || r.Checked != r.Items || r.Committed == 0 {
		return false
	}
	for _, m := range r.EdgeMismatch {
		if m != 0 {
			return false
		}
	}
	for _, e := range r.Edges {
		if e.Errors != 0 || e.Regressions != 0 || e.Reads == 0 {
			return false
		}
	}
	return true
}

// Print writes the report as counts.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nchaos: what was done\n")
	fmt.Fprintf(w, "  %-42s %10s %12s %10s %10s %10s\n", "fault (kill -9, restart)", "down", "served down", "recovery", "writes", "write errs")
	for _, f := range r.Faults {
		sv := "-"
		if f.Served > 0 {
			sv = f.Served.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(w, "  %-42s %10s %12s %10s %10d %10d\n", f.Component, f.Down.Round(10*time.Millisecond), sv, f.Recovery.Round(10*time.Millisecond), f.Writes, f.WriteErrs)
	}
	fmt.Fprintf(w, "  updates committed %d, failed (during outages) %d, over %v\n", r.Committed, r.WriteErrors, r.Duration.Round(time.Second))
	fmt.Fprintf(w, "\nchaos: what was verified\n")
	fmt.Fprintf(w, "  items compared (core seq = Redis seq = edge seq, and edge version = Redis version): %d of %d, converged %v after the load stopped\n", r.Checked, r.Items, r.ConvergedIn.Round(10*time.Millisecond))
	fmt.Fprintf(w, "  lost or stale in Redis: %d\n", r.RedisMismatch)
	for i, e := range r.Edges {
		mm := 0
		if i < len(r.EdgeMismatch) {
			mm = r.EdgeMismatch[i]
		}
		fmt.Fprintf(w, "  edge %-14s reads %d, read errors %d %v, version regressions %d, stale serves %d, lost or stale at the end %d\n",
			e.Name, e.Reads, e.Errors, e.ErrorsByPhase, e.Regressions, e.Stale, mm)
		if e.FirstError != "" {
			fmt.Fprintf(w, "      first error: %s\n", e.FirstError)
		}
		if e.FirstRegression != "" {
			fmt.Fprintf(w, "      first regression: %s\n", e.FirstRegression)
		}
	}
	if r.FirstMismatch != "" {
		fmt.Fprintf(w, "  first mismatch: %s\n", r.FirstMismatch)
	}
	if r.OK() {
		fmt.Fprintf(w, "  RESULT: OK: zero lost changes, zero version regressions, zero read errors for cached keys\n")
	} else {
		fmt.Fprintf(w, "  RESULT: FAILED\n")
	}
}

type load struct {
	pool            *pgxpool.Pool
	committed, errs atomic.Int64
	lastErr         atomic.Pointer[string]
	stop            chan struct{}
	wg              sync.WaitGroup
}

func startLoad(pool *pgxpool.Pool, items, rate int) *load {
	l := &load{pool: pool, stop: make(chan struct{})}
	// Four writers, each committing a small batch (one event per row) every tick.
	const writers = 4
	tick := 20 * time.Millisecond
	perTick := max(1, rate*int(tick/time.Millisecond)/1000/writers)
	for range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			t := time.NewTicker(tick)
			defer t.Stop()
			ids := make([]int64, perTick)
			for {
				select {
				case <-l.stop:
					return
				case <-t.C:
				}
				for i := range ids {
					ids[i] = int64(2 + rand.IntN(items-1)) // item 1 is the recovery probe's
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				got, err := pipeline.Bump(ctx, pool, ids)
				cancel()
				if err != nil {
					l.errs.Add(int64(len(ids)))
					s := err.Error()
					l.lastErr.Store(&s)
					continue
				}
				l.committed.Add(int64(len(got)))
			}
		}()
	}
	return l
}

func (l *load) halt() {
	close(l.stop)
	l.wg.Wait()
}

// Run runs the scenario and returns its report; the error wraps ErrLoss when an invariant failed.
func Run(ctx context.Context, cfg Config) (Report, error) {
	var rep Report
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	say := func(f string, a ...any) { fmt.Fprintf(out, f+"\n", a...) }
	t0 := time.Now()
	say("chaos: starting the pipeline under %s", cfg.RunDir)
	p, err := pipeline.Start(ctx, pipeline.Config{RepoDir: cfg.RepoDir, RunDir: cfg.RunDir, Items: cfg.Items, Out: out,
		// Two producer replicas: killing the one that writes the projection is a takeover. The
		// broker's smallest session timeout keeps it short; the pointer is reconciled each second.
		ProducerReplicas: 2,
		// Three sentinels watch the primary and its replica: the services and edge B find the
		// primary through them, so killing the primary is a failover.
		Sentinel:    true,
		ProducerEnv: []string{"PRODUCER_GROUP_SESSION_TIMEOUT=6s"},
		ControlEnv:  []string{"CONTROLPLANE_POINTER_RECONCILE_INTERVAL=1s"},
	})
	if err != nil {
		return rep, err
	}
	defer p.Stop()
	fail := func(err error) (Report, error) {
		return rep, fmt.Errorf("%w\nservice logs (%s):\n%s", err, p.ServiceLogDir(), p.LogTails())
	}

	keys := make([]string, cfg.Items)
	for i := range keys {
		keys[i] = pipeline.Key(i + 1)
	}
	proxy, err := tcpproxy.Start("127.0.0.1:0", p.RedisAddr)
	if err != nil {
		return fail(err)
	}
	defer proxy.Close()
	edgeOpts := []distcache.Option{distcache.WithFetchTimeout(500 * time.Millisecond)}
	edgeA, err := pipeline.NewEdge(ctx, proxy.Addr(), keys, edgeOpts...)
	if err != nil {
		return fail(fmt.Errorf("edge A: %w", err))
	}
	defer edgeA.Close(context.Background())
	// Edge B finds the primary and its replica through the sentinels, reads the replica first
	// (and tails its change stream there), the primary when the replica is down.
	edgeB, err := pipeline.NewEdgeOn(ctx, distcache.WithSentinel(pipeline.SentinelMaster, p.SentinelAddrs...), keys, edgeOpts...)
	if err != nil {
		return fail(fmt.Errorf("edge B: %w", err))
	}
	defer edgeB.Close(context.Background())
	edges := []*distcache.Client{edgeA, edgeB}
	say("chaos: edges up, each holding %d keys (edge A reaches the first primary's node through a cuttable proxy %s; edge B finds the nodes through the sentinels %v and reads the replica first)", cfg.Items, proxy.Addr(), p.SentinelAddrs)

	pool, err := pgxpool.New(ctx, p.CoreURL)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	rdb := p.PrimaryClient()
	defer rdb.Close()

	watchers := []*pipeline.Watcher{
		pipeline.NewWatcher("A (proxied)", edgeA, keys, 2),
		pipeline.NewWatcher("B (direct)", edgeB, keys, 2),
	}
	setPhase := func(ph string) {
		for _, w := range watchers {
			w.SetPhase(ph)
		}
	}
	ld := startLoad(pool, cfg.Items, cfg.Rate)
	loadStopped := false
	stopAll := func() {
		if !loadStopped {
			ld.halt()
			loadStopped = true
		}
		for _, w := range watchers {
			rep.Edges = append(rep.Edges, w.Stop())
		}
	}
	hold := func(d time.Duration) error { // a deliberate outage or settling period, not a wait for a condition
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	say("chaos: load %d updates/s on %d items; faults every %v, each down %v", cfg.Rate, cfg.Items, cfg.Down+cfg.Settle, cfg.Down)
	if err := hold(cfg.Settle); err != nil {
		stopAll()
		return fail(err)
	}

	type step struct {
		name    string
		kill    func() error
		restore func(context.Context) error
		instant bool          // nothing is held down: no -down pause
		minDown time.Duration // held down at least this long
		served  bool          // the pipeline must serve fresh commits while it is down
		// servedBy are the edges that must see them: edge A's node may be the one down
		servedBy []*distcache.Client
	}
	var steps []step
	for _, c := range p.Components() {
		s := step{name: c.Name(), kill: c.Kill, restore: c.Start}
		if i, ok := c.(interface{ Instant() bool }); ok && i.Instant() {
			s.instant = true // a wipe: recovery counts from it
		}
		if m, ok := c.(interface{ MinDown() time.Duration }); ok {
			s.minDown = m.MinDown()
		}
		if sv, ok := c.(interface{ ServedWhileDown() bool }); ok {
			s.served, s.servedBy = sv.ServedWhileDown(), edges
		}
		if nd, ok := c.(interface{ NodeDown() bool }); ok && nd.NodeDown() {
			s.servedBy = []*distcache.Client{edgeB} // edge A reads a fixed node, the one down
		}
		steps = append(steps, s)
	}
	steps = append(steps, step{name: "edge A's Redis connection (cut)", kill: func() error { proxy.Cut(); return nil },
		restore: func(context.Context) error { proxy.Restore(); return nil }})

	for _, s := range steps {
		c0, e0 := ld.committed.Load(), ld.errs.Load()
		setPhase(s.name + " down")
		start := time.Now()
		if err := s.kill(); err != nil {
			stopAll()
			return fail(fmt.Errorf("kill %s: %w", s.name, err))
		}
		var served time.Duration
		if s.served {
			// The others take over (or the sentinels promote the replica): a fresh commit must
			// reach both edges while the component stays down.
			if err := probe(ctx, pool, rdb, s.servedBy, 2*time.Minute); err != nil {
				stopAll()
				return fail(fmt.Errorf("while %s is down: %w", s.name, err))
			}
			served = time.Since(start)
		}
		if !s.instant {
			if err := hold(max(cfg.Down, s.minDown) - time.Since(start)); err != nil {
				stopAll()
				return fail(err)
			}
		}
		setPhase(s.name + " restarting")
		if err := s.restore(ctx); err != nil {
			stopAll()
			return fail(fmt.Errorf("restart %s: %w", s.name, err))
		}
		f := Fault{Component: s.name, Down: time.Since(start), Served: served, Writes: ld.committed.Load() - c0, WriteErrs: ld.errs.Load() - e0}
		setPhase("after " + s.name)
		healthy := time.Now()
		if err := probe(ctx, pool, rdb, edges, 3*time.Minute); err != nil {
			stopAll()
			return fail(fmt.Errorf("after %s: %w", s.name, err))
		}
		f.Recovery = time.Since(healthy)
		rep.Faults = append(rep.Faults, f)
		servedNote := ""
		if f.Served > 0 {
			servedNote = fmt.Sprintf(" (while down, a fresh commit reached the edges that can see it %v after the fault)", f.Served.Round(10*time.Millisecond))
		}
		say("chaos: %-32s down %-8v recovered (fresh commit at both edges) in %v%s; %d writes committed, %d failed meanwhile",
			s.name, f.Down.Round(10*time.Millisecond), f.Recovery.Round(10*time.Millisecond), servedNote, f.Writes, f.WriteErrs)
		if err := hold(cfg.Settle); err != nil {
			stopAll()
			return fail(err)
		}
	}
	ld.halt()
	loadStopped = true
	stopAll()
	rep.Committed, rep.WriteErrors = ld.committed.Load(), ld.errs.Load()
	rep.Items = cfg.Items
	say("chaos: load stopped; checking core DB, Redis and both edges agree on every item")

	// Convergence: poll until everything agrees or the deadline passes; the last comparison is
	// the verdict.
	conv := time.Now()
	deadline := conv.Add(cfg.Converge)
	for {
		if err := compare(ctx, pool, rdb, edges, &rep); err != nil && time.Now().After(deadline) {
			return fail(err)
		}
		done := rep.Checked == rep.Items && rep.RedisMismatch == 0 && !slices.ContainsFunc(rep.EdgeMismatch, func(n int) bool { return n != 0 })
		if done || time.Now().After(deadline) {
			break
		}
		if err := hold(250 * time.Millisecond); err != nil {
			return fail(err)
		}
	}
	rep.ConvergedIn = time.Since(conv)
	rep.Duration = time.Since(t0)
	if !rep.OK() {
		return rep, fmt.Errorf("%w: see the report\nservice logs (%s):\n%s", ErrLoss, p.ServiceLogDir(), p.LogTails())
	}
	return rep, nil
}

// probe commits an update of item 1 and waits until both edges show it.
func probe(ctx context.Context, pool *pgxpool.Pool, rdb *redis.Client, edges []*distcache.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var seq int64
	var lastErr error
	for seq == 0 {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		got, err := pipeline.Bump(cctx, pool, []int64{1})
		cancel()
		if err == nil {
			seq = got[1]
			break
		}
		lastErr = err
		if time.Now().After(deadline) {
			return fmt.Errorf("probe commit: %w", lastErr)
		}
		time.Sleep(50 * time.Millisecond) // retrying a failed commit while the database comes back
	}
	key := pipeline.Key(1)
	for {
		all := true
		for _, dc := range edges {
			e, err := dc.GetEntry(ctx, pipeline.Projection.Name, key)
			if s, ok := pipeline.Seq(e.Value); err != nil || !ok || s < seq {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("probe: seq %d of %s not at every edge within %v (%s; %s)", seq, key, timeout, edgeStates(ctx, edges, key), redisState(ctx, rdb))
		}
		time.Sleep(5 * time.Millisecond) // polling the edges for the probe's value
	}
}

// edgeStates says what each edge answers for key: its seq, version and staleness, or its error.
func edgeStates(ctx context.Context, edges []*distcache.Client, key string) string {
	var b strings.Builder
	for i, dc := range edges {
		if i > 0 {
			b.WriteString("; ")
		}
		e, err := dc.GetEntry(ctx, pipeline.Projection.Name, key)
		if err != nil {
			fmt.Fprintf(&b, "edge %d: %v", i, err)
			continue
		}
		s, _ := pipeline.Seq(e.Value)
		fmt.Fprintf(&b, "edge %d: seq %d version %d stale %v", i, s, e.Version, e.Stale)
	}
	return b.String()
}

// redisState says what the Redis primary holds of the probe's item (1): the pointer, and the
// item's version and seq in the generation it names.
func redisState(ctx context.Context, rdb *redis.Client) string {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	red, err := pipeline.ReadRedis(cctx, rdb, []int{1})
	if err != nil {
		return fmt.Sprintf("redis: %v", err)
	}
	it := red[1]
	return fmt.Sprintf("redis: found %v version %d seq %d", it.Found, it.Version, it.Seq)
}

// compare checks every item: the committed seq in the core DB against Redis's live value, and
// each edge's local value against both (seq, and version against Redis's). Redis versions are not
// the outbox's: the cache-producer versions each write by its record's topic offset + 1 (see
// services/cache-producer/internal/projector), so the edge is held to Redis's version.
func compare(ctx context.Context, pool *pgxpool.Pool, rdb *redis.Client, edges []*distcache.Client, rep *Report) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rows, err := pipeline.CoreRows(cctx, pool)
	if err != nil {
		return err
	}
	ids := make([]int, 0, len(rows))
	for id := range rows {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	red, err := pipeline.ReadRedis(cctx, rdb, ids)
	if err != nil {
		return err
	}
	rep.Checked, rep.RedisMismatch, rep.FirstMismatch = len(ids), 0, ""
	rep.EdgeMismatch = make([]int, len(edges))
	note := func(f string, a ...any) {
		if rep.FirstMismatch == "" {
			rep.FirstMismatch = fmt.Sprintf(f, a...)
		}
	}
	for _, id := range ids {
		row := rows[id]
		ri := red[id]
		if !ri.Found || ri.Seq != row.Seq {
			rep.RedisMismatch++
			note("item %d: core seq %d (outbox version %d), Redis %+v", id, row.Seq, row.Version, ri)
		}
		for i, dc := range edges {
			e, err := dc.GetEntry(cctx, pipeline.Projection.Name, pipeline.Key(id))
			s, ok := pipeline.Seq(e.Value)
			if err != nil || !ok || s != row.Seq || e.Version != ri.Version {
				rep.EdgeMismatch[i]++
				note("item %d at edge %d: core seq %d, Redis seq %d version %d, edge seq %d version %d err %v", id, i, row.Seq, ri.Seq, ri.Version, s, e.Version, err)
			}
		}
	}
	return nil
}

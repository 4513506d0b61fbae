// Command publisher-bench measures the core-publisher relay on the local
// stack it starts itself (PostgreSQL and the kafkad broker, on free ports,
// under a temporary directory) and prints a table:
//
//   - throughput: a backlog of N outbox rows with 1 KB payloads drained to
//     the broker, in events per second;
//   - latency: writers commit one event per transaction at a steady rate
//     (1,000 events/s by default); the time from each COMMIT's return to
//     the broker's acknowledgement of that event, p50/p99/max.
//
// Each scenario runs -runs times on a fresh database; the table shows every
// run and the median.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/core-publisher/internal/producer"
	"github.com/distcache/distcache/services/core-publisher/internal/pubmetrics"
	"github.com/distcache/distcache/services/core-publisher/internal/relay"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher-bench:", err)
		os.Exit(1)
	}
}

type params struct {
	runs        int
	backlog     int
	batch       int
	payload     int
	rate        int
	latencyTime time.Duration
	writers     int
	txn         bool
	asyncCommit bool
	tuning      string
	fence       bool
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("publisher-bench", flag.ContinueOnError)
	var p params
	fs.IntVar(&p.runs, "runs", 3, "runs per scenario (the table reports the median)")
	fs.IntVar(&p.backlog, "backlog", 100000, "rows in the throughput backlog")
	fs.IntVar(&p.batch, "batch", 2000, "relay batch size")
	fs.IntVar(&p.payload, "payload", 1024, "payload size in bytes")
	fs.IntVar(&p.rate, "rate", 1000, "latency scenario: events per second")
	fs.DurationVar(&p.latencyTime, "latency-duration", 10*time.Second, "latency scenario: duration of one run")
	fs.IntVar(&p.writers, "writers", 8, "latency scenario: concurrent writers")
	fs.BoolVar(&p.asyncCommit, "writer-async-commit", false, "latency scenario: writers commit with synchronous_commit=off (diagnoses fsync stalls)")
	fs.StringVar(&p.tuning, "outbox-storage", "", "storage parameters applied to distcache_outbox before a run, e.g. vacuum_truncate=off (experiments)")
	fs.BoolVar(&p.fence, "fence", true, "relay with the commit fence (the service's default)")
	modes := fs.String("modes", "txn,idempotent", "producer modes to measure, side by side: txn (Kafka transactions, the service's default) and/or idempotent")
	verbose := fs.Bool("v", false, "log every relay batch (debug) to stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	if *verbose {
		relayLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	dir, err := os.MkdirTemp("", "publisher-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := devstack.EnsureInstalled(ctx); err != nil {
		return err
	}
	pg, err := devstack.StartPostgres(ctx, devstack.PostgresConfig{Dir: filepath.Join(dir, "pg"), Mode: devstack.Attached})
	if err != nil {
		return err
	}
	defer pg.Stop()
	kbin, err := buildKafkad(dir)
	if err != nil {
		return err
	}
	k, err := devstack.StartKafka(ctx, devstack.KafkaConfig{Bin: kbin, Dir: filepath.Join(dir, "kafka"), Mode: devstack.Attached})
	if err != nil {
		return err
	}
	defer k.Stop()

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "scenario\tmode\trun\tresult\t\n")
	type summary struct {
		mode                  string
		thr, p50s, p99s, maxs []float64
	}
	var sums []summary
	for _, mode := range strings.Split(*modes, ",") {
		if mode != "txn" && mode != "idempotent" {
			return fmt.Errorf("-modes: unknown mode %q (want txn or idempotent)", mode)
		}
		sums = append(sums, summary{mode: mode})
	}
	// Modes alternate run by run so a change in the machine's load hits
	// them alike.
	for i := range p.runs {
		for m := range sums {
			sm := &sums[m]
			p.txn = sm.mode == "txn"
			evs, err := throughput(ctx, pg, k.Addr, p, m*100+i)
			if err != nil {
				return fmt.Errorf("throughput run %d: %w", i+1, err)
			}
			sm.thr = append(sm.thr, evs)
			fmt.Fprintf(tw, "throughput (%d x %d B, batch %d)\t%s\t%d\t%.0f ev/s\t\n", p.backlog, p.payload, p.batch, sm.mode, i+1, evs)
		}
	}
	for i := range p.runs {
		for m := range sums {
			sm := &sums[m]
			p.txn = sm.mode == "txn"
			lat, err := latency(ctx, pg, k.Addr, p, m*100+i)
			if err != nil {
				return fmt.Errorf("latency run %d: %w", i+1, err)
			}
			sm.p50s, sm.p99s, sm.maxs = append(sm.p50s, lat.p50), append(sm.p99s, lat.p99), append(sm.maxs, lat.max)
			fmt.Fprintf(tw, "commit->ack @ %d ev/s (%d events, %d writers)\t%s\t%d\tp50 %.2f ms  p99 %.2f ms  max %.2f ms\t\n", p.rate, lat.n, p.writers, sm.mode, i+1, lat.p50, lat.p99, lat.max)
		}
	}
	fmt.Fprintf(tw, "\t\t\t\t\n")
	for _, sm := range sums {
		fmt.Fprintf(tw, "MEDIAN throughput\t%s\t\t%.0f ev/s (goal >= 30000)\t\n", sm.mode, median(sm.thr))
		fmt.Fprintf(tw, "MEDIAN commit->ack @ %d ev/s\t%s\t\tp50 %.2f ms  p99 %.2f ms (goal p99 <= 20)  max %.2f ms\t\n", p.rate, sm.mode, median(sm.p50s), median(sm.p99s), median(sm.maxs))
	}
	fmt.Fprintf(tw, "published, not measured here\tDebezium (managed Kafka Connect)\t\t~6000 ev/s\t\n")
	fmt.Fprintf(tw, "published, not measured here\tSequin (larger hardware)\t\t~40000 ev/s\t\n")
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(tw, "machine load average at the end\t\t\t%s\t\n", strings.Join(strings.Fields(string(la))[:3], " "))
	}
	return tw.Flush()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func buildKafkad(dir string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root := wd
	for {
		if _, err := os.Stat(filepath.Join(root, "go.work")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			return "", fmt.Errorf("no go.work above %s: run from inside the repository", wd)
		}
		root = parent
	}
	bin := filepath.Join(dir, "kafkad")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/kafkad")
	cmd.Dir = filepath.Join(root, "tools")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build kafkad: %w\n%s", err, out)
	}
	return bin, nil
}

// freshDB creates database name; cleanup closes the pool and drops it.
func freshDB(ctx context.Context, pg *devstack.Postgres, name string) (string, *pgxpool.Pool, error) {
	_ = pg.DropDatabase(ctx, name)
	if err := pg.CreateDatabase(ctx, name); err != nil {
		return "", nil, err
	}
	url := pg.URL(name)
	if err := migrations.Up(ctx, url, migrations.Core); err != nil {
		return "", nil, err
	}
	pool, err := pgxpool.New(ctx, url)
	return url, pool, err
}

var relayLog = slog.New(slog.DiscardHandler)

// startRelay runs a relay whose producers (one per lease term) are
// transactional when txn is set and pass through wrap.
func startRelay(ctx context.Context, url, broker string, batch int, fence, txn bool, wrap func(relay.Producer) relay.Producer, m *pubmetrics.Metrics) (func(), error) {
	newProducer := func(id string) (relay.Producer, error) {
		opts := []producer.Option{producer.WithReplicationFactor(1)}
		if txn {
			opts = append(opts, producer.WithTransactionalID(id))
		}
		p, err := producer.New([]kgo.Opt{kgo.SeedBrokers(broker)}, opts...)
		if err != nil {
			return nil, err
		}
		return wrap(p), nil
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	r, err := relay.New(cfg, newProducer, relay.WithBatchSize(batch), relay.WithMetrics(m), relay.WithLogger(relayLog), relay.WithTopicPrefix("bench"),
		relay.WithPollInterval(time.Second), relay.WithLeaseRetryInterval(100*time.Millisecond), relay.WithCommitFence(fence))
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = r.Run(rctx); close(done) }()
	return func() { cancel(); <-done }, nil
}

func identity(p relay.Producer) relay.Producer { return p }

// throughput drains a backlog of p.backlog rows and returns events/s.
func throughput(ctx context.Context, pg *devstack.Postgres, broker string, p params, i int) (float64, error) {
	url, pool, err := freshDB(ctx, pg, "thr"+strconv.Itoa(i))
	if err != nil {
		return 0, err
	}
	defer func() { pool.Close(); _ = pg.DropDatabase(context.WithoutCancel(ctx), "thr"+strconv.Itoa(i)) }()
	agg := "thr" + strconv.Itoa(i)
	body := strings.Repeat("x", max(0, p.payload-30))
	if _, err := pool.Exec(ctx, `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload)
		SELECT $1, g::text, 1, 'upsert', jsonb_build_object('id', g, 'body', $2::text) FROM generate_series(1, $3) g`, agg, body, p.backlog); err != nil {
		return 0, err
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE distcache_outbox`); err != nil {
		return 0, err
	}
	if relayLog.Enabled(ctx, slog.LevelDebug) {
		explain(ctx, pool, p.batch)
	}
	prod, err := producer.New([]kgo.Opt{kgo.SeedBrokers(broker)}, producer.WithReplicationFactor(1))
	if err != nil {
		return 0, err
	}
	defer prod.Close()
	// Create the topic first so the measurement is the relay's steady state.
	if err := prod.EnsureTopic(ctx, events.Topic("bench", agg)); err != nil {
		return 0, err
	}
	defer deleteTopic(broker, events.Topic("bench", agg))
	m := pubmetrics.New()
	start := time.Now()
	stop, err := startRelay(ctx, url, broker, p.batch, p.fence, p.txn, identity, m)
	if err != nil {
		return 0, err
	}
	defer stop()
	for testutil.ToFloat64(m.EventsPublished.WithLabelValues(agg)) < float64(p.backlog) {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	return float64(p.backlog) / el.Seconds(), nil
}

// ackTimes records when each event (by key) was acknowledged.
type ackTimes struct {
	mu   sync.Mutex
	acks map[string]time.Time
}

// ackingProducer records acknowledgement times in t.
type ackingProducer struct {
	relay.Producer
	t *ackTimes
}

func (a *ackingProducer) Produce(ctx context.Context, recs []*kgo.Record) error {
	err := a.Producer.Produce(ctx, recs)
	if err == nil {
		now := time.Now()
		a.t.mu.Lock()
		for _, r := range recs {
			a.t.acks[string(r.Key)] = now
		}
		a.t.mu.Unlock()
	}
	return err
}

type latencyResult struct {
	n             int
	p50, p99, max float64
}

// latency commits one event per transaction at p.rate events/s and measures
// commit -> broker ack.
func latency(ctx context.Context, pg *devstack.Postgres, broker string, p params, i int) (latencyResult, error) {
	var res latencyResult
	url, pool, err := freshDB(ctx, pg, "lat"+strconv.Itoa(i))
	if err != nil {
		return res, err
	}
	defer func() { pool.Close(); _ = pg.DropDatabase(context.WithoutCancel(ctx), "lat"+strconv.Itoa(i)) }()
	agg := "lat" + strconv.Itoa(i)
	if p.tuning != "" {
		if _, err := pool.Exec(ctx, `ALTER TABLE distcache_outbox SET (`+p.tuning+`)`); err != nil {
			return res, fmt.Errorf("-outbox-storage: %w", err)
		}
	}
	prod, err := producer.New([]kgo.Opt{kgo.SeedBrokers(broker)}, producer.WithReplicationFactor(1))
	if err != nil {
		return res, err
	}
	defer prod.Close()
	if err := prod.EnsureTopic(ctx, events.Topic("bench", agg)); err != nil {
		return res, err
	}
	defer deleteTopic(broker, events.Topic("bench", agg))
	acks := &ackTimes{acks: map[string]time.Time{}}
	wrap := func(p relay.Producer) relay.Producer { return &ackingProducer{Producer: p, t: acks} }
	stop, err := startRelay(ctx, url, broker, p.batch, p.fence, p.txn, wrap, pubmetrics.New())
	if err != nil {
		return res, err
	}
	defer stop()
	w, _ := events.NewOutboxWriter()
	payload := []byte(`{"body":"` + strings.Repeat("x", max(0, p.payload-12)) + `"}`)

	total := int(p.latencyTime.Seconds() * float64(p.rate))
	commits := make([]time.Time, total)
	interval := time.Second / time.Duration(p.rate)
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, p.writers)
	slots := make(chan int, total)
	for n := range total {
		slots <- n
	}
	close(slots)
	for range p.writers {
		wg.Go(func() {
			for n := range slots {
				// Open-loop schedule: event n is due at start + n*interval.
				if d := time.Until(start.Add(time.Duration(n) * interval)); d > 0 {
					time.Sleep(d)
				}
				tx, err := pool.Begin(ctx)
				if err != nil {
					errc <- err
					return
				}
				if p.asyncCommit {
					if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
						errc <- err
						return
					}
				}
				if err := w.Write(ctx, tx, events.Envelope{Aggregate: agg, Key: strconv.Itoa(n), Op: events.OpUpsert, Payload: payload}); err != nil {
					_ = tx.Rollback(ctx)
					errc <- err
					return
				}
				if err := tx.Commit(ctx); err != nil {
					errc <- err
					return
				}
				commits[n] = time.Now()
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		return res, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		acks.mu.Lock()
		n := len(acks.acks)
		acks.mu.Unlock()
		if n >= total {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d events acknowledged", n, total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if relayLog.Enabled(ctx, slog.LevelDebug) {
		// The worst latency per 250 ms of the run, to see whether stalls are
		// periodic.
		worst := map[int]float64{}
		acks.mu.Lock()
		for n, c := range commits {
			slot := int(c.Sub(start) / (250 * time.Millisecond))
			worst[slot] = max(worst[slot], acks.acks[strconv.Itoa(n)].Sub(c).Seconds()*1000)
		}
		acks.mu.Unlock()
		var line strings.Builder
		for slot := range len(worst) {
			fmt.Fprintf(&line, "%.0f ", worst[slot])
		}
		fmt.Fprintln(os.Stderr, "worst ms per 250ms:", line.String())
	}
	lat := make([]float64, 0, total)
	acks.mu.Lock()
	for n, c := range commits {
		d := acks.acks[strconv.Itoa(n)].Sub(c)
		lat = append(lat, max(0, d.Seconds()*1000))
	}
	acks.mu.Unlock()
	slices.Sort(lat)
	res.n = total
	res.p50 = lat[len(lat)/2]
	res.p99 = lat[len(lat)*99/100]
	res.max = lat[len(lat)-1]
	slog.Debug("latency run done", "n", total)
	return res, nil
}

// explain prints the plan and timing of the relay's read (its SQL mirrors
// relay.fetchSQL) for -v runs.
func explain(ctx context.Context, pool *pgxpool.Pool, batch int) {
	rows, err := pool.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) SELECT id, txid < (SELECT pg_snapshot_xmin(pg_current_snapshot())),
	COALESCE(aggregate, ''), COALESCE(agg_key, ''), COALESCE(version, 0), COALESCE(op, ''),
	payload, COALESCE(headers, '{}'::jsonb), COALESCE(event_id::text, ''), COALESCE(created_at, now())
FROM distcache_outbox WHERE NOT (COALESCE(aggregate, '') = ANY($2::text[])) ORDER BY id LIMIT $1`, batch, []string{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "explain:", err)
		return
	}
	for rows.Next() {
		var line string
		_ = rows.Scan(&line)
		fmt.Fprintln(os.Stderr, line)
	}
	for _, q := range []string{`SELECT payload FROM distcache_outbox ORDER BY id LIMIT 2000`, `SELECT payload::text FROM distcache_outbox ORDER BY id LIMIT 2000`, `SELECT id FROM distcache_outbox ORDER BY id LIMIT 2000`} {
		start := time.Now()
		rs, _ := pool.Query(ctx, q)
		n := 0
		for rs.Next() {
			n++
		}
		rs.Close()
		fmt.Fprintf(os.Stderr, "%v for %d rows: %s\n", time.Since(start), n, q)
	}
}

// deleteTopic removes a run's topic so runs do not pile up data in the broker.
func deleteTopic(broker, topic string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = kadm.NewClient(cl).DeleteTopics(ctx, topic)
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
)

const childEnv = "CACHE_PRODUCER_TEST_CHILD"

// TestMain doubles as the service binary: with childEnv set, the test binary
// runs the service (so tests can SIGKILL a real process without building one).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, nil, os.Getenv, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	devstacktest.Main(m)
}

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	env := map[string]string{"PRODUCER_REDIS_ADDRS": "nope", "PRODUCER_BATCH_SIZE": "0"}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard)
	if err == nil {
		t.Fatal("run accepted an invalid configuration")
	}
	for _, name := range []string{"PRODUCER_DATABASE_URL", "PRODUCER_REDIS_ADDRS", "PRODUCER_KAFKA_BROKERS", "PRODUCER_BATCH_SIZE"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	if err := run(context.Background(), []string{"extra"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Error("run accepted a positional argument")
	}
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

type child struct {
	t   *testing.T
	cmd *exec.Cmd
	out *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startChild(t *testing.T, env []string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, childEnv+"=1")...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, out: out}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("service output:\n%s", out.String())
		}
	})
	return c
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var usersByEmail = projection.Definition{
	Name: "users_by_email", Model: "users", KeyTemplate: "{email}", LowercaseKey: true,
	Fields: []string{"id", "email"},
	Filter: &projection.Filter{Field: "status", Op: projection.OpIn, Values: []string{"active", "trial"}},
}

// TestServiceEndToEnd runs the service as a real process against PostgreSQL,
// Redis and the broker: it follows the registry (a generation added while it
// runs is picked up through NOTIFY, without a restart), serves /healthz,
// /readyz and /metrics (with lag per generation), is SIGKILLed in the middle
// of a stream and restarted, after which every generation equals the model
// of the whole topic with no version going backwards, removes the
// bookkeeping of a retired generation, and stops cleanly on SIGTERM.
func TestServiceEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStack(ctx, t)
	dbURL, reg, r, k, rdb := st.dbURL, st.reg, st.redis, st.kafka, st.rdb
	led := ledger.New(rdb, 0)
	p := prodtest.NewProducer(t, k.Addr, "distcache", "users")

	zero := int64(0)
	if err := reg.CreateProjection(ctx, usersByEmail); err != nil {
		t.Fatal(err)
	}
	gen1, _, err := reg.AllocateGeneration(ctx, usersByEmail, "wf-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.SetState(ctx, usersByEmail.Name, gen1, workflows.StateTailing, &zero); err != nil {
		t.Fatal(err)
	}

	httpAddr := freeAddr(t)
	env := []string{
		"PRODUCER_DATABASE_URL=" + dbURL, "PRODUCER_REDIS_ADDRS=" + r.Addr, "PRODUCER_KAFKA_BROKERS=" + k.Addr,
		"PRODUCER_HTTP_ADDR=" + httpAddr, "PRODUCER_BATCH_SIZE=50", "PRODUCER_LOG_LEVEL=debug",
		"PRODUCER_RELOAD_INTERVAL=1h", // only NOTIFY can explain a reload within the test
	}
	svc := startChild(t, env)
	base := "http://" + httpAddr
	devstacktest.Eventually(t, 30*time.Second, func() bool { c, _ := get(base + "/readyz"); return c == 200 }, "/readyz answers 200")
	if c, body := get(base + "/healthz"); c != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %d %q", c, body)
	}

	var all []*kgo.Record
	build := func(from, n int) []*kgo.Record {
		recs := make([]*kgo.Record, 0, n)
		for i := from; i < from+n; i++ {
			id := strconv.Itoa(i % 300)
			switch {
			case i%17 == 0:
				recs = append(recs, p.Tombstone(id))
			case i%29 == 0:
				recs = append(recs, p.Garbage(id))
			default:
				status := []string{"active", "trial", "gone"}[i%3]
				recs = append(recs, p.Upsert(id, map[string]any{"id": id, "email": fmt.Sprintf("U%s-%d@X.io", id, i%7), "status": status}))
			}
		}
		return recs
	}
	produce := func(from, n int) {
		recs := build(from, n)
		p.Produce(recs...)
		all = append(all, recs...)
	}
	waitAt := func(gen int64) {
		t.Helper()
		end := all[len(all)-1].Offset + 1
		devstacktest.Eventually(t, 30*time.Second, func() bool {
			off, ok, err := led.Offset(ctx, usersByEmail.Name, gen)
			return err == nil && ok && off == end
		}, "generation %d reaches offset %d", gen, end)
	}
	check := func(gen int64) {
		t.Helper()
		model := prodtest.NewModel(t, usersByEmail)
		for _, rec := range all {
			model.Apply(rec.Offset, string(rec.Key), rec.Value)
		}
		got, err := prodtest.ReadGeneration(ctx, rdb, usersByEmail.Name, gen)
		if err != nil {
			t.Fatal(err)
		}
		if d := prodtest.Diff(got, model.Live()); d != "" {
			t.Errorf("generation %d differs from the model:\n%s", gen, d)
		}
		if err := prodtest.StreamVersionsIncrease(ctx, rdb, usersByEmail.Name, gen); err != nil {
			t.Errorf("generation %d: %v", gen, err)
		}
	}

	produce(0, 1000)
	waitAt(gen1)
	check(gen1)

	// A new generation appears in the registry: picked up without a restart.
	gen2, _, err := reg.AllocateGeneration(ctx, usersByEmail, "wf-2")
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.SetState(ctx, usersByEmail.Name, gen2, workflows.StateTailing, &zero); err != nil {
		t.Fatal(err)
	}
	waitAt(gen2)
	check(gen2)

	for _, want := range []string{
		`distcache_producer_lag_records{generation="1",projection="users_by_email"} 0`,
		`distcache_producer_events_per_second{topic="distcache.users"}`,
		`distcache_producer_dead_letters_total{generation="1",projection="users_by_email",reason="payload_not_json"}`,
		`distcache_producer_writes_total{generation="2",op="delete",projection="users_by_email"}`,
	} {
		devstacktest.Eventually(t, 10*time.Second, func() bool {
			_, metrics := get(base + "/metrics")
			return strings.Contains(metrics, want)
		}, "/metrics shows %s", want)
	}

	// SIGKILL in the middle of a stream (the producer keeps writing while
	// the service consumes), then restart.
	before := all[len(all)-1].Offset + 1
	stop := make(chan struct{})
	produced := make(chan struct{})
	produceErr := make(chan error, 1)
	go func() { // not the test's goroutine: no t.Fatal here
		defer close(produced)
		for i := 1000; ; i += 100 {
			select {
			case <-stop:
				return
			default:
			}
			recs := build(i, 100)
			if _, err := p.TryProduce(recs...); err != nil {
				produceErr <- err
				return
			}
			all = append(all, recs...)
		}
	}()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		off, _, _ := led.Offset(ctx, usersByEmail.Name, gen1)
		return off > before+500
	}, "consumption of the new stream started")
	if err := svc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = svc.cmd.Wait()
	close(stop)
	<-produced
	select {
	case err := <-produceErr:
		t.Fatalf("produce: %v", err)
	default:
	}
	killedAt, _, _ := led.Offset(ctx, usersByEmail.Name, gen1)
	t.Logf("killed at offset %d of %d", killedAt, all[len(all)-1].Offset+1)
	produce(100000, 500)
	svc = startChild(t, env)
	waitAt(gen1)
	waitAt(gen2)
	check(gen1)
	check(gen2)

	// Retiring generation 1 removes its bookkeeping.
	if err := reg.SetState(ctx, usersByEmail.Name, gen1, workflows.StateRetired, nil); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		has, err := led.HasBookkeeping(ctx, usersByEmail.Name, gen1)
		return err == nil && !has
	}, "bookkeeping of the retired generation removed")
	if n, _ := rdb.Exists(ctx, ledger.IndexKey(usersByEmail.Name, gen1, "1"), ledger.IndexBucketKey(usersByEmail.Name, gen1, "1"),
		ledger.IndexLogKey(usersByEmail.Name, gen1), ledger.IndexSnapshotKey(usersByEmail.Name, gen1)).Result(); n != 0 {
		t.Error("index key of the retired generation left behind")
	}
	if has, _ := led.HasBookkeeping(ctx, usersByEmail.Name, gen2); !has {
		t.Error("bookkeeping of the live generation removed")
	}

	// Graceful stop.
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- svc.cmd.Wait() }()
	select {
	case err := <-errc:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Errorf("service exited with %v after SIGTERM", err)
		}
		if !strings.Contains(svc.out.String(), `"msg":"stopped"`) {
			t.Error("no clean stop logged")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("service did not stop within 20s of SIGTERM")
	}
}

// TestRunRefusesEvictingRedis: a Redis whose maxmemory-policy may evict keys would drop offsets,
// indexes and pointers silently; the producer refuses to start on it, naming the policy and the
// variable that overrides the check.
func TestRunRefusesEvictingRedis(t *testing.T) {
	t.Parallel()
	r := devstacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PRODUCER_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "PRODUCER_REDIS_ADDRS": r.Addr,
		"PRODUCER_KAFKA_BROKERS": "127.0.0.1:1", "PRODUCER_HTTP_ADDR": freeAddr(t),
	}
	err := run(ctx, nil, func(k string) string { return env[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "maxmemory-policy allkeys-lru") ||
		!strings.Contains(err.Error(), "PRODUCER_REDIS_ALLOW_EVICTION") {
		t.Fatalf("run on an allkeys-lru Redis = %v; want a refusal naming the policy and PRODUCER_REDIS_ALLOW_EVICTION", err)
	}
}

// TestDataPathWithoutTemporal: the producer starts while Temporal is down, is ready but
// "degraded", and streams a live update of the topic into Redis; once Temporal is started again
// its activity worker attaches and /readyz says "ok".
func TestDataPathWithoutTemporal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tmp := devstacktest.OwnTemporal(t)
	if err := tmp.Stop(); err != nil {
		t.Fatalf("stop temporal: %v", err)
	}
	st := newStack(ctx, t)
	dbURL, reg, r, k, rdb := st.dbURL, st.reg, st.redis, st.kafka, st.rdb
	p := prodtest.NewProducer(t, k.Addr, "distcache", "users")
	zero := int64(0)
	if err := reg.CreateProjection(ctx, usersByEmail); err != nil {
		t.Fatal(err)
	}
	gen, _, err := reg.AllocateGeneration(ctx, usersByEmail, "wf-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.SetState(ctx, usersByEmail.Name, gen, workflows.StateTailing, &zero); err != nil {
		t.Fatal(err)
	}

	httpAddr := freeAddr(t)
	svc := startChild(t, []string{
		"PRODUCER_DATABASE_URL=" + dbURL, "PRODUCER_REDIS_ADDRS=" + r.Addr, "PRODUCER_KAFKA_BROKERS=" + k.Addr,
		"PRODUCER_HTTP_ADDR=" + httpAddr, "PRODUCER_TEMPORAL_HOSTPORT=" + tmp.HostPort,
		"PRODUCER_TEMPORAL_NAMESPACE=" + tmp.Namespace, "PRODUCER_LOG_LEVEL=debug",
	})
	readyz := "http://" + httpAddr + "/readyz"
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		c, body := get(readyz)
		return c == 200 && strings.Contains(body, `"status":"degraded: temporal"`) &&
			strings.Contains(body, `"name":"temporal","ok":false,"optional":true`)
	}, "/readyz answers 200 degraded (temporal) while Temporal is down")

	// A live update reaches Redis while Temporal is down.
	p.Produce(p.Upsert("7", map[string]any{"id": "7", "email": "Live@X.io", "status": "active"}))
	key := "live@x.io"
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		got, err := prodtest.ReadGeneration(ctx, rdb, usersByEmail.Name, gen)
		return err == nil && strings.Contains(got[key].Data, `"email":"Live@X.io"`)
	}, "the live update of user 7 reaches generation %d under key %q", gen, key)

	// Temporal comes back: the activity worker attaches.
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := tmp.Start(sctx); err != nil {
		t.Fatalf("start temporal again: %v", err)
	}
	devstacktest.Eventually(t, time.Minute, func() bool {
		c, body := get(readyz)
		return c == 200 && strings.Contains(body, `"status":"ok"`)
	}, "/readyz says ok once Temporal is back")
	// The log reaches the test through a pipe: it may trail /readyz.
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(svc.out.String(), "temporal worker attached")
	}, "the log says the worker attached")
	if n := strings.Count(svc.out.String(), "temporal is unavailable; retrying"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
}

// stack is what a service test of the producer runs against: a migrated registry database, a
// Redis and a broker of its own, stopped when the test ends.
type stack struct {
	dbURL string
	reg   *registry.Store
	redis *devstack.Redis
	kafka *devstack.Kafka
	rdb   *redis.Client
}

func newStack(ctx context.Context, t *testing.T) stack {
	t.Helper()
	dbURL := devstacktest.Database(t)
	if err := migrations.Up(ctx, dbURL, migrations.Control); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	r := devstacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return stack{dbURL: dbURL, reg: registry.New(pool), redis: r, kafka: devstacktest.Kafka(t), rdb: rdb}
}

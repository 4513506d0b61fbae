package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/distcache/distcache/services/core-publisher/internal/backload"
	"github.com/distcache/distcache/services/core-publisher/internal/pubtest"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// testToken is the API token of the tests' services.
const testToken = "publisher-test-token-0123456789"

// serviceEnv is a test configuration of the service.
func serviceEnv(t *testing.T, dbURL, broker string, extra ...string) map[string]string {
	t.Helper()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PUBLISHER_DATABASE_URL":         dbURL,
		"PUBLISHER_KAFKA_BROKERS":        broker,
		"PUBLISHER_HTTP_ADDR":            "127.0.0.1:" + strconv.Itoa(port),
		"PUBLISHER_REPLICATION_FACTOR":   "1",
		"PUBLISHER_POLL_INTERVAL":        "200ms",
		"PUBLISHER_LEASE_RETRY_INTERVAL": "100ms",
		"PUBLISHER_LOG_FORMAT":           "text",
		"PUBLISHER_LOG_LEVEL":            "warn",
		"PUBLISHER_TOKENS":               testToken,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// startService runs the service in-process until stop is called (or the
// test ends); stop returns run's error.
func startService(t *testing.T, env map[string]string) (base string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard, testLogWriter{t})
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	base = "http://" + env["PUBLISHER_HTTP_ADDR"]
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "service answers /healthz")
	return base, stop
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// authed sends a request with the test token.
func authed(method, url string) (*http.Response, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	return http.DefaultClient.Do(req)
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := authed(http.MethodGet, url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

func role(t *testing.T, base string) string {
	var body struct{ Role, Status string }
	if getJSON(t, base+"/readyz", &body) != http.StatusOK {
		return ""
	}
	return body.Role
}

func waitOutboxEmpty(t *testing.T, pool *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	devstacktest.Eventually(t, timeout, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0
	}, "outbox drained")
}

// TestBackloadUnderConcurrentWrites: a table with rows that predate the
// capture trigger is backloaded (automatically: first time the model is
// seen) in small chunks while rows are updated, deleted and inserted
// concurrently; afterwards the latest record per key on the topic equals the
// row, or is a tombstone for a deleted row.
func TestBackloadUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	const rows = 2000
	pubtest.Exec(t, pool, `CREATE TABLE users (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0, body text NOT NULL DEFAULT '')`)
	pubtest.Exec(t, pool, `INSERT INTO users (id, n, body) SELECT g, 0, 'before' FROM generate_series(1, $1) g`, rows)
	pubtest.Exec(t, pool, `CREATE TRIGGER users_distcache AFTER INSERT OR UPDATE OR DELETE ON users
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id')`)

	var stopWriters atomic.Bool
	var wg sync.WaitGroup
	var ops atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 99))
			ctx := context.Background()
			for !stopWriters.Load() {
				id := 1 + rnd.IntN(rows+300)
				var err error
				switch rnd.IntN(10) {
				case 0, 1:
					_, err = pool.Exec(ctx, `DELETE FROM users WHERE id = $1`, id)
				case 2:
					// two keys, descending: the opposite lock order of the backload.
					tx, berr := pool.Begin(ctx)
					if berr != nil {
						continue
					}
					_, err = tx.Exec(ctx, `UPDATE users SET n = n + 1, body = 'pair' WHERE id IN ($1, $2)`, id, id-1)
					if err == nil {
						err = tx.Commit(ctx)
					} else {
						_ = tx.Rollback(ctx)
					}
				default:
					_, err = pool.Exec(ctx, `INSERT INTO users (id, n, body) VALUES ($1, 1, $2)
						ON CONFLICT (id) DO UPDATE SET n = users.n + 1, body = excluded.body`, id, fmt.Sprintf("w%d-%d", w, rnd.IntN(1000)))
				}
				if err == nil {
					ops.Add(1)
				}
			}
		})
	}
	t.Cleanup(func() { stopWriters.Store(true); wg.Wait() })

	env := serviceEnv(t, dbURL, k.Addr, "PUBLISHER_BACKLOAD_CHUNK_SIZE", "50")
	base, _ := startService(t, env)
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		var st backload.State
		return getJSON(t, base+"/v1/backload/users", &st) == http.StatusOK && st.Status == backload.StatusDone
	}, "initial backload done")
	stopWriters.Store(true)
	wg.Wait()
	t.Logf("concurrent writes during the backload: %d", ops.Load())
	if ops.Load() < 100 {
		t.Fatalf("only %d concurrent writes: the test did not exercise concurrency", ops.Load())
	}
	waitOutboxEmpty(t, pool, 30*time.Second)

	reader := pubtest.NewReader(t, k.Addr, "distcache.users")
	reader.ReadAll(t, k.Addr, "distcache.users")
	latest := pubtest.Latest(reader.Events)
	table := map[string][]byte{}
	rs, err := pool.Query(context.Background(), `SELECT id::text, to_jsonb(u) FROM users u`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id string
		var img []byte
		if err := rs.Scan(&id, &img); err != nil {
			t.Fatal(err)
		}
		table[id] = img
	}
	bad := 0
	for id, img := range table {
		e, ok := latest[id]
		if !ok || e.Op != "upsert" || !pubtest.JSONEqual(e.Value, img) {
			bad++
			if bad <= 5 {
				t.Errorf("key %s: latest record %+v (value %s), want the row %s", id, e, e.Value, img)
			}
		}
	}
	for id, e := range latest {
		if _, ok := table[id]; !ok && (e.Op != "delete" || e.Value != nil) {
			bad++
			if bad <= 10 {
				t.Errorf("key %s: deleted row, latest record op %q value %s, want a tombstone", id, e.Op, e.Value)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d keys differ from the table", bad)
	}
	for key, vs := range pubtest.Versions(reader.Events) {
		for i := 1; i < len(vs); i++ {
			if vs[i] <= vs[i-1] {
				t.Errorf("key %s: versions not increasing: %v", key, vs)
				break
			}
		}
	}
}

// TestHTTPAndCLI: health, readiness, metrics, the backload API and the
// backload CLI subcommand.
func TestHTTPAndCLI(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("orgs"))
	pubtest.Exec(t, pool, `ALTER TABLE orgs DISABLE TRIGGER orgs_distcache`)
	pubtest.Exec(t, pool, `INSERT INTO orgs (id) SELECT generate_series(1, 30)`)
	pubtest.Exec(t, pool, `ALTER TABLE orgs ENABLE TRIGGER orgs_distcache`)
	env := serviceEnv(t, dbURL, k.Addr, "PUBLISHER_AUTO_BACKLOAD", "false")
	getenv := func(k string) string { return env[k] }

	// The CLI lists models and backloads one, then exits.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"models"}, getenv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "orgs\torgs\tid\n" {
		t.Errorf("models: got %q, want %q", got, "orgs\torgs\tid\n")
	}
	out.Reset()
	if err := run(context.Background(), []string{"backload", "orgs"}, getenv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var st backload.State
	if err := json.Unmarshal(out.Bytes(), &st); err != nil || st.Status != backload.StatusDone || st.Rows != 30 {
		t.Errorf("backload CLI output: got %s (err %v), want status done, 30 rows", out.String(), err)
	}
	if err := run(context.Background(), []string{"backload", "nope"}, getenv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "unknown model") {
		t.Errorf("backload of an unknown model: got %v, want an unknown model error", err)
	}
	if err := run(context.Background(), []string{"frobnicate"}, getenv, io.Discard, io.Discard); err == nil {
		t.Error("unknown command: got nil error")
	}

	base, _ := startService(t, env)
	devstacktest.Eventually(t, 10*time.Second, func() bool { return role(t, base) == "active" }, "ready and active")
	reader := pubtest.NewReader(t, k.Addr, "distcache.orgs")
	reader.ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return len(evs) == 30 }, "CLI backload published")

	post := func(model string) int {
		resp, err := authed(http.MethodPost, base+"/v1/backload/"+model)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post("nope"); got != http.StatusNotFound {
		t.Errorf("POST unknown model: got %d, want 404", got)
	}
	// Hold the model's lock as a running backload elsewhere would.
	conn, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pubtest.Exec(t, pool, `SELECT 1`)
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_lock(hashtextextended('distcache_backload:orgs', 0))`); err != nil {
		t.Fatal(err)
	}
	if got := post("orgs"); got != http.StatusConflict {
		t.Errorf("POST while running elsewhere: got %d, want 409", got)
	}
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtextextended('distcache_backload:orgs', 0))`); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	if got := post("orgs"); got != http.StatusAccepted {
		t.Errorf("POST backload: got %d, want 202", got)
	}
	reader.ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return len(evs) == 60 }, "API backload published")
	for _, e := range reader.Events[30:] {
		if e.Version != 2 {
			t.Errorf("second backload of key %s: version %d, want 2", e.Key, e.Version)
		}
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		var st backload.State
		return getJSON(t, base+"/v1/backload/orgs", &st) == http.StatusOK && st.Status == backload.StatusDone && st.Rows == 30
	}, "GET backload state: done, 30 rows")
	if got := getJSON(t, base+"/v1/backload/nope", nil); got != http.StatusNotFound {
		t.Errorf("GET state of a model never backloaded: got %d, want 404", got)
	}

	// Counters move when the batch's rows are deleted, just after the acks.
	wantMetrics := []string{
		`distcache_publisher_events_total{aggregate="orgs"} 60`,
		"distcache_publisher_active 1",
		"distcache_publisher_lag_seconds",
		`distcache_publisher_backload_progress_ratio{model="orgs"} 1`,
		`distcache_publisher_backload_rows_total{model="orgs"} 30`,
		"distcache_publisher_commit_to_ack_seconds_bucket",
	}
	var missing []string
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing = missing[:0]
		for _, want := range wantMetrics {
			if !strings.Contains(string(body), want) {
				missing = append(missing, want)
			}
		}
		return len(missing) == 0
	}, "/metrics has every expected series")

	if err := k.Kill(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return getJSON(t, base+"/readyz", nil) == http.StatusServiceUnavailable
	}, "not ready without a broker")
	if got := getJSON(t, base+"/healthz", nil); got != http.StatusOK {
		t.Errorf("/healthz without a broker: got %d, want 200", got)
	}
}

// TestGracefulShutdownFlushes: cancelling the service mid-backlog finishes
// the batch in flight: every event on the topic is gone from the outbox and
// every event gone from the outbox is on the topic, exactly once.
func TestGracefulShutdownFlushes(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("items"))
	const n = 20000
	// An older transaction left open holds every later row behind the relay's commit fence, so
	// the backlog cannot drain while the service starts; releasing it and stopping as soon as the
	// first batch is acknowledged stops the relay in the middle of the backlog, whatever the
	// machine's speed.
	ctx := context.Background()
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	pubtest.Exec(t, pool, `INSERT INTO items (id, body) SELECT g, repeat('x', 200) FROM generate_series(1, $1) g`, n)
	env := serviceEnv(t, dbURL, k.Addr, "PUBLISHER_BATCH_SIZE", "500", "PUBLISHER_AUTO_BACKLOAD", "false")
	base, stop := startService(t, env)
	if got := metricValue(t, base, `distcache_publisher_events_total{aggregate="items"}`); got != "" && got != "0" {
		t.Fatalf("published %s events past an open older transaction; the fence should hold them", got)
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		v := metricValue(t, base, `distcache_publisher_events_total{aggregate="items"}`)
		return v != "" && v != "0"
	}, "publishing started")
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	left := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`)
	if left == 0 {
		t.Fatal("the whole backlog was published before the stop: nothing in flight was tested")
	}
	reader := pubtest.NewReader(t, k.Addr, "distcache.items")
	reader.ReadAll(t, k.Addr, "distcache.items")
	if got := int64(len(reader.Events)) + left; got != n {
		t.Errorf("published %d + left in outbox %d = %d, want %d (no loss, no duplicate)", len(reader.Events), left, got, n)
	}
}

// buildBinary builds the service into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "core-publisher")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type proc struct {
	cmd  *exec.Cmd
	base string
	done chan struct{}
}

func startProc(t *testing.T, bin string, env map[string]string) *proc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = testLogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, base: "http://" + env["PUBLISHER_HTTP_ADDR"], done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
	return p
}

// TestKillActivePublisher: two publisher processes share an outbox; the
// active one is killed with SIGKILL in the middle of a backlog while writers
// keep committing. The standby takes over within a bounded time, every event
// arrives, and each key's events stay in order: a redelivery replays a
// suffix of the key's history once, never interleaving old records among
// new ones.
func TestKillActivePublisher(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("items"))
	pubtest.Exec(t, pool, `INSERT INTO items (id, body) SELECT g, repeat('x', 1000) FROM generate_series(1000, 20999) g`)

	a := startProc(t, bin, serviceEnv(t, dbURL, k.Addr, "PUBLISHER_BATCH_SIZE", "500", "PUBLISHER_AUTO_BACKLOAD", "false"))
	devstacktest.Eventually(t, 30*time.Second, func() bool { return role(t, a.base) == "active" }, "first process active")
	b := startProc(t, bin, serviceEnv(t, dbURL, k.Addr, "PUBLISHER_BATCH_SIZE", "500", "PUBLISHER_AUTO_BACKLOAD", "false"))
	devstacktest.Eventually(t, 30*time.Second, func() bool { return role(t, b.base) == "standby" }, "second process standing by")

	var stopWriters atomic.Bool
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; !stopWriters.Load(); i++ {
				_, _ = pool.Exec(context.Background(), `INSERT INTO items (id, n) VALUES ($1, 1)
					ON CONFLICT (id) DO UPDATE SET n = items.n + 1`, (i*3+w)%40)
			}
		})
	}
	t.Cleanup(func() { stopWriters.Store(true); wg.Wait() })

	reader := pubtest.NewReader(t, k.Addr, "distcache.items")
	reader.ReadUntil(t, 30*time.Second, func(evs []pubtest.Event) bool { return len(evs) >= 3000 }, "publishing under way")
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	killed := time.Now()
	left := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`)
	devstacktest.Eventually(t, 5*time.Second, func() bool { return role(t, b.base) == "active" }, "standby takes over within 5s")
	t.Logf("takeover %v after SIGKILL, %d rows were left in the outbox", time.Since(killed), left)
	if left == 0 {
		t.Fatal("outbox empty at the kill: nothing in flight was tested")
	}
	stopWriters.Store(true)
	wg.Wait()

	want := map[string]int64{}
	rs, err := pool.Query(context.Background(), `SELECT agg_key, version FROM distcache_outbox_versions WHERE aggregate = 'items'`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var key string
		var v int64
		if err := rs.Scan(&key, &v); err != nil {
			t.Fatal(err)
		}
		want[key] = v
	}
	reader.ReadUntil(t, 60*time.Second, func(evs []pubtest.Event) bool { return pubtest.HasAllVersions(evs, want) }, "every version of every key")
	waitOutboxEmpty(t, pool, 30*time.Second)
	reader.ReadAll(t, k.Addr, "distcache.items")
	dups := 0
	for key, vs := range pubtest.Versions(reader.Events) {
		if err := pubtest.CheckOrder(key, vs, 1); err != nil {
			t.Error(err)
		}
		if _, ok := want[key]; !ok {
			t.Errorf("key %s on the topic but never written", key)
		}
		dups += len(vs) - int(want[key])
	}
	t.Logf("%d events, %d redelivered after the kill", len(reader.Events), dups)
}

func metricValue(t *testing.T, base, name string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestTakeoverFencesStalledBatch: the active publisher is killed while its
// batch is stuck in a stalled broker (SIGSTOP), and the standby takes the
// lease before the broker resumes; the dead publisher's requests are still
// in the broker's socket buffer then. Afterwards nothing is lost, each key's
// last record on the topic is its newest version and each key's history is
// replayed at most once, in order. (kfake handles the dead publisher's
// buffered requests before the successor's, so this checks the outcome;
// the transaction fence that guarantees it whatever the order is checked by
// producer.TestTransactionalFence.)
func TestTakeoverFencesStalledBatch(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("items"))
	const keys, versions = 500, 20
	// An older open transaction holds the backlog behind the commit fence until both processes
	// run, so it cannot drain before the broker is stalled, however fast the machine.
	ctx := context.Background()
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	pubtest.Exec(t, pool, `INSERT INTO items (id) SELECT generate_series(1, $1)`, keys)
	for range versions - 1 {
		pubtest.Exec(t, pool, `UPDATE items SET n = n + 1`)
	}
	env := func() map[string]string {
		return serviceEnv(t, dbURL, k.Addr, "PUBLISHER_BATCH_SIZE", "50", "PUBLISHER_AUTO_BACKLOAD", "false",
			"PUBLISHER_POLL_INTERVAL", "100ms", "PUBLISHER_LEASE_RETRY_INTERVAL", "50ms")
	}
	a := startProc(t, bin, env())
	devstacktest.Eventually(t, 30*time.Second, func() bool { return role(t, a.base) == "active" }, "first process active")
	b := startProc(t, bin, env())
	devstacktest.Eventually(t, 30*time.Second, func() bool { return role(t, b.base) == "standby" }, "second process standing by")

	reader := pubtest.NewReader(t, k.Addr, "distcache.items")
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		v, err := strconv.ParseFloat(metricValue(t, a.base, `distcache_publisher_events_total{aggregate="items"}`), 64)
		return err == nil && v >= 200
	}, "publishing under way")
	if err := syscall.Kill(k.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(k.PID(), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	// A batch is stuck once the outbox stops shrinking.
	last, lastChange := int64(-1), time.Now()
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		n := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`)
		if n != last {
			last, lastChange = n, time.Now()
		}
		return time.Since(lastChange) > 300*time.Millisecond
	}, "relay stuck on the stalled broker")
	if last == 0 {
		t.Fatal("outbox drained before the broker stalled: nothing in flight")
	}
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	devstacktest.Eventually(t, 5*time.Second, func() bool { return metricValue(t, b.base, "distcache_publisher_active") == "1" }, "standby takes the lease")
	resume()

	want := map[string]int64{}
	for id := 1; id <= keys; id++ {
		want[strconv.Itoa(id)] = versions
	}
	reader.ReadUntil(t, 60*time.Second, func(evs []pubtest.Event) bool { return pubtest.HasAllVersions(evs, want) }, "every version of every key")
	waitOutboxEmpty(t, pool, 30*time.Second)
	reader.ReadAll(t, k.Addr, "distcache.items")
	for key, vs := range pubtest.Versions(reader.Events) {
		if err := pubtest.CheckOrder(key, vs, 1); err != nil {
			t.Error(err)
		}
	}
	stale := 0
	for key, e := range pubtest.Latest(reader.Events) {
		if e.Version != versions {
			stale++
			if stale <= 5 {
				t.Errorf("key %s: last record on the topic has version %d, want %d (an old record landed after newer ones)", key, e.Version, versions)
			}
		}
	}
	t.Logf("%d events for %d, %d stale keys", len(reader.Events), keys*versions, stale)
}

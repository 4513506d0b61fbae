package devstacktest_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

func TestDatabaseIsFreshAndUsable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url1 := devstacktest.Database(t)
	url2 := devstacktest.Database(t)
	if url1 == url2 {
		t.Fatalf("two databases share a URL: %s", url1)
	}
	conn, err := pgx.Connect(ctx, url1)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)"); err != nil {
		t.Fatalf("exec: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("count = %d, %v; want 2", n, err)
	}
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "postgres" {
		t.Fatalf("current_user = %q, %v", user, err)
	}
}

func TestPostgresRestartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := devstacktest.OwnPostgres(t)
	url := devstacktest.DatabaseOn(t, pg)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"); err != nil {
		t.Fatalf("exec: %v", err)
	}
	conn.Close(ctx)
	if err := pg.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	conn, err = pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != "kept" {
		t.Fatalf("after restart got %q, %v; want kept", v, err)
	}
}

// TestPostgresRestartWaitsForOldBackends: a backend of the killed postmaster that has not
// exited yet (here: stopped, as a starved one on a loaded machine would be) still holds the
// server's shared memory, and a new postmaster would refuse to start ("pre-existing shared
// memory block is still in use"). Restart waits until it is gone.
func TestPostgresRestartWaitsForOldBackends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := devstacktest.OwnPostgres(t)
	url := devstacktest.DatabaseOn(t, pg)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatalf("backend pid: %v", err)
	}
	if err := syscall.Kill(backend, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop backend %d: %v", backend, err)
	}
	const held = 2 * time.Second
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(held) // the backend's delay is the point of the test, not a wait for a condition
		_ = syscall.Kill(backend, syscall.SIGCONT)
	}()
	t.Cleanup(func() { _ = syscall.Kill(backend, syscall.SIGCONT); <-resumed })
	start := time.Now()
	if err := pg.Restart(ctx); err != nil {
		t.Fatalf("restart with a backend of the old server alive: %v", err)
	}
	if took := time.Since(start); took < held {
		t.Errorf("restart took %s, less than the %s the old backend held the shared memory", took, held)
	}
	if err := pg.Health(ctx); err != nil {
		t.Fatalf("health after restart: %v", err)
	}
}

func TestRedisReplicaServesPrimaryWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary, replica := devstacktest.RedisReplicated(t)
	p, r := primary.Client(), replica.Client()
	defer p.Close()
	defer r.Close()
	if err := p.Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatalf("set on primary: %v", err)
	}
	var got string
	devstacktest.Eventually(t, 5*time.Second, func() bool {
		got, _ = r.Get(ctx, "k").Result()
		return got == "v1"
	}, "replica never returned the primary's write (last %q)", got)
	if err := r.Set(ctx, "k", "x", 0).Err(); err == nil {
		t.Fatalf("write on the replica succeeded; want READONLY error")
	}
}

func TestRedisClusterRoutesAcrossSlots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := devstacktest.RedisCluster(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	for i := 0; i < 100; i++ {
		if err := cc.Set(ctx, fmt.Sprintf("key-%d", i), i, 0).Err(); err != nil {
			t.Fatalf("set key-%d: %v", i, err)
		}
	}
	masters := 0
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		if n > 0 {
			masters++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("for each master: %v", err)
	}
	if masters != 3 {
		t.Fatalf("keys spread over %d masters; want 3", masters)
	}
}

func TestRedisKillAndRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := devstacktest.Redis(t)
	c := r.Client()
	defer c.Close()
	if err := r.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatalf("ping after kill succeeded")
	}
	if err := r.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
}

// TestRedisPersistKeepsData: a server started with Persist (the local stack's) keeps its data
// across a stop and a start, and one without starts empty: what a second make demo relies on.
func TestRedisPersistKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, persist := range []bool{true, false} {
		r := devstacktest.RedisWith(t, devstack.RedisConfig{Persist: persist})
		c := r.Client()
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := r.Stop(); err != nil { // SIGTERM: Redis writes its append-only file out
			t.Fatalf("stop: %v", err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatalf("start: %v", err)
		}
		got, err := c.Get(ctx, "k").Result()
		_ = c.Close()
		if persist && (err != nil || got != "v") {
			t.Fatalf("Persist: GET k after a restart = %q, %v; want v", got, err)
		}
		if !persist && err == nil {
			t.Fatalf("no Persist: GET k after a restart = %q; want it gone", got)
		}
	}
}

func TestKafkaPersistsAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := devstacktest.Kafka(t)
	topic := devstacktest.UniqueName(t, "topic")
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if err := kadmCreate(ctx, k.Addr, topic); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cl.Close()
	if err := k.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatalf("start again: %v", err)
	}
	cl, err = kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	fetches := cl.PollRecords(ctx, 1)
	if errs := fetches.Errors(); len(errs) > 0 {
		t.Fatalf("poll: %v", errs)
	}
	recs := fetches.Records()
	if len(recs) != 1 || string(recs[0].Value) != "v" {
		t.Fatalf("after restart got %d records; want the one produced before", len(recs))
	}
}

func greet(ctx workflow.Context, name string) (string, error) {
	return "hello " + name, nil
}

func TestTemporalRunsAWorkflow(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := devstacktest.Temporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort, Namespace: srv.Namespace})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	queue := devstacktest.UniqueName(t, "q")
	w := worker.New(c, queue, worker.Options{})
	w.RegisterWorkflow(greet)
	if err := w.Start(); err != nil {
		t.Fatalf("worker: %v", err)
	}
	defer w.Stop()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: queue}, greet, "distcache")
	if err != nil {
		t.Fatalf("execute: %v", err)
	}
	var got string
	if err := run.Get(ctx, &got); err != nil {
		t.Fatalf("result: %v", err)
	}
	if got != "hello distcache" {
		t.Fatalf("got %q; want %q", got, "hello distcache")
	}
}

// TestOwnTemporalStopsAndStartsAgain: a test's own Temporal can be stopped (its port refuses
// health checks) and started again on the same port, keeping the default namespace.
func TestOwnTemporalStopsAndStartsAgain(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := devstacktest.OwnTemporal(t)
	port := srv.Port()
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	err := srv.Health(pctx)
	pcancel()
	if err == nil {
		t.Fatal("health after Stop = nil, want an error")
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("start again: %v", err)
	}
	if srv.Port() != port {
		t.Errorf("port after Start = %d, want %d", srv.Port(), port)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := srv.Health(ctx); err != nil {
		t.Fatalf("health after Restart: %v", err)
	}
}

func kadmCreate(ctx context.Context, addr, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, topic)
	if err != nil {
		return err
	}
	return resp.Err
}

// customAttributes lists the custom search attributes of srv's namespace (name → type).
func customAttributes(ctx context.Context, t *testing.T, srv *devstack.Temporal) map[string]string {
	t.Helper()
	c, err := client.Dial(client.Options{HostPort: srv.HostPort, Namespace: srv.Namespace})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: srv.Namespace})
	if err != nil {
		t.Fatalf("list search attributes: %v", err)
	}
	out := map[string]string{}
	for name, typ := range resp.GetCustomAttributes() {
		if strings.HasPrefix(name, "Distcache") {
			out[name] = typ.String()
		}
	}
	return out
}

// TestTemporalSearchAttributes: the tests' dev servers register distcache's search attributes
// (devstack.SearchAttributes, through --search-attribute), one started WithoutSearchAttributes
// has none, and EnsureSearchAttributes adds what is missing, twice without harm.
func TestTemporalSearchAttributes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := map[string]string{}
	for _, sa := range devstack.SearchAttributes {
		typ, err := enumspb.IndexedValueTypeFromString(sa.Type)
		if err != nil {
			t.Fatal(err)
		}
		want[sa.Name] = typ.String()
	}
	if got := customAttributes(ctx, t, devstacktest.Temporal(t)); !maps.Equal(got, want) {
		t.Errorf("shared dev server: search attributes %v, want %v", got, want)
	}
	bare := devstacktest.OwnTemporal(t, devstacktest.WithoutSearchAttributes())
	if got := customAttributes(ctx, t, bare); len(got) != 0 {
		t.Errorf("dev server WithoutSearchAttributes: search attributes %v, want none", got)
	}
	for range 2 {
		if err := devstack.EnsureSearchAttributes(ctx, bare.HostPort, bare.Namespace, devstack.SearchAttributes); err != nil {
			t.Fatalf("EnsureSearchAttributes: %v", err)
		}
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		return maps.Equal(customAttributes(ctx, t, bare), want)
	}, "EnsureSearchAttributes registered %v", want)
}

// TestChromiumReadsAPage: EnsureChromium finds (or installs) a browser; a Page waits until the
// text a script writes late is there (and reads a sandboxed frame's, as the Temporal UI renders
// markdown), reads the DOM and writes a PNG.
func TestChromiumReadsAPage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	path, err := devstack.EnsureChromium(ctx)
	if err != nil {
		t.Fatalf("EnsureChromium: %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `<html><body><div id="x">static</div><iframe sandbox srcdoc="<p>inside a sandboxed frame</p>"></iframe><script>
setTimeout(function(){document.getElementById("x").textContent="rendered by script"}, 1500)</script></body></html>`)
	}))
	defer srv.Close()
	page, err := devstack.Chromium{Path: path, Width: 640, Height: 480}.Open(ctx, srv.URL)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer page.Close()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err := page.WaitForText(wctx, "rendered by script", "inside a sandboxed frame"); err != nil {
		t.Fatalf("WaitForText: %v", err)
	}
	html, err := page.HTML(ctx)
	if err != nil || !strings.Contains(html, `<div id="x">rendered by script</div>`) {
		t.Errorf("HTML = %q, %v; want the text the script wrote", html, err)
	}
	png := filepath.Join(t.TempDir(), "page.png")
	if err := page.Screenshot(ctx, png); err != nil {
		t.Fatalf("Screenshot: %v", err)
	}
	b, err := os.ReadFile(png)
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screenshot is not a PNG (%d bytes, %v)", len(b), err)
	}
	short, scancel := context.WithTimeout(ctx, time.Second)
	defer scancel()
	if _, err := page.WaitForText(short, "never written"); err == nil || !strings.Contains(err.Error(), "never written") {
		t.Errorf("WaitForText of absent text = %v, want an error naming it", err)
	}
}

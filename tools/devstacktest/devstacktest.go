// Package devstacktest gives integration tests their own real components: PostgreSQL databases,
// Redis servers (standalone, replicated, Cluster), a Kafka-protocol broker and a Temporal dev
// server, each on free loopback ports under a temporary directory, stopped when the test (or, for
// the per-package shared ones, the test binary) ends. Processes are tied to the test binary, so
// even a crashed test leaves none behind.
//
// A package that uses it calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { devstacktest.Main(m) }
package devstacktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/tools/devstack"
)

const (
	startTimeout         = 90 * time.Second
	temporalStartTimeout = 3 * time.Minute
)

var (
	baseOnce sync.Once
	baseDir  string
	baseErr  error

	sharedMu sync.Mutex
	sharedPG *devstack.Postgres
	sharedT  *devstack.Temporal
	stops    []func() error

	kafkadOnce sync.Once
	kafkadBin  string
	kafkadErr  error

	temporalOnce sync.Once
	temporalBin  string
	temporalErr  error
)

// Main runs the package's tests and then stops the components shared by the package.
func Main(m *testing.M) {
	code := m.Run()
	sharedMu.Lock()
	for i := len(stops) - 1; i >= 0; i-- {
		if err := stops[i](); err != nil {
			fmt.Fprintf(os.Stderr, "devstacktest: stop: %v\n", err)
		}
	}
	sharedMu.Unlock()
	if baseDir != "" {
		_ = os.RemoveAll(baseDir)
	}
	os.Exit(code)
}

// AtExit runs stop when Main ends, after the tests and benchmarks (for
// shared fixtures a package builds lazily, such as a benchmark's Redis).
func AtExit(stop func() error) {
	sharedMu.Lock()
	stops = append(stops, stop)
	sharedMu.Unlock()
}

// dir returns a fresh directory for one component.
func dir(t testing.TB, name string) string {
	t.Helper()
	baseOnce.Do(func() {
		baseDir, baseErr = os.MkdirTemp("", "devstacktest-")
		if baseErr == nil {
			baseErr = os.Chmod(baseDir, 0o755)
		}
	})
	if baseErr != nil {
		t.Fatalf("devstacktest: temp dir: %v", baseErr)
	}
	d, err := os.MkdirTemp(baseDir, name+"-")
	if err != nil {
		t.Fatalf("devstacktest: temp dir: %v", err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatalf("devstacktest: temp dir: %v", err)
	}
	return d
}

func startCtx(t testing.TB, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func ensureInstalled(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := devstack.EnsureInstalled(ctx); err != nil {
		t.Fatalf("devstacktest: %v", err)
	}
}

// RepoRoot returns the directory that holds go.work.
func RepoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		d = parent
	}
}

// Postgres returns the package's shared PostgreSQL cluster, starting it on first use. Tests that
// kill or restart PostgreSQL must use OwnPostgres instead.
func Postgres(t testing.TB) *devstack.Postgres {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedPG == nil {
		pg := startPostgres(t)
		sharedPG = pg
		stops = append(stops, pg.Stop)
	}
	return sharedPG
}

// OwnPostgres starts a PostgreSQL cluster for this test alone, stopped at cleanup.
func OwnPostgres(t testing.TB) *devstack.Postgres {
	t.Helper()
	pg := startPostgres(t)
	t.Cleanup(func() { _ = pg.Stop() })
	return pg
}

func startPostgres(t testing.TB) *devstack.Postgres {
	t.Helper()
	ensureInstalled(t)
	ctx, cancel := startCtx(t, startTimeout)
	defer cancel()
	pg, err := devstack.StartPostgres(ctx, devstack.PostgresConfig{Dir: dir(t, "postgres")})
	if err != nil {
		t.Fatalf("devstacktest: start postgres: %v", err)
	}
	return pg
}

// Database creates a fresh, empty database on the package's shared cluster and returns its URL.
// The database is dropped when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	return DatabaseOn(t, Postgres(t))
}

// DatabaseOn creates a fresh, empty database on pg and returns its URL; it is dropped at cleanup.
func DatabaseOn(t testing.TB, pg *devstack.Postgres) string {
	t.Helper()
	name := UniqueName(t, "t")
	ctx, cancel := startCtx(t, startTimeout)
	defer cancel()
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("devstacktest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.DropDatabase(ctx, name); err != nil {
			t.Logf("devstacktest: drop database %s: %v", name, err)
		}
	})
	return pg.URL(name)
}

// UniqueName returns a lowercase identifier made of prefix, the test's name and a random suffix,
// usable as a database name, a topic, a key prefix or a projection name (at most 48 characters).
func UniqueName(t testing.TB, prefix string) string {
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteByte('_')
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 39 {
		s = s[:39]
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return s + "_" + hex.EncodeToString(rnd[:])
}

// Redis starts a standalone redis-server for this test, stopped at cleanup.
func Redis(t testing.TB) *devstack.Redis {
	t.Helper()
	return RedisWith(t, devstack.RedisConfig{})
}

// RedisWith starts a redis-server with the given config (Dir and Mode are set for you).
func RedisWith(t testing.TB, cfg devstack.RedisConfig) *devstack.Redis {
	t.Helper()
	ensureInstalled(t)
	ctx, cancel := startCtx(t, startTimeout)
	defer cancel()
	cfg.Dir = dir(t, "redis")
	cfg.Mode = devstack.Attached
	r, err := devstack.StartRedis(ctx, cfg)
	if err != nil {
		t.Fatalf("devstacktest: start redis: %v", err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

// RedisReplicated starts a primary and one replica (replicaof) for this test and returns them once
// the replica's link is up.
func RedisReplicated(t testing.TB) (primary, replica *devstack.Redis) {
	t.Helper()
	primary = Redis(t)
	replica = RedisWith(t, devstack.RedisConfig{ReplicaOf: primary.Addr})
	return primary, replica
}

// RedisSentinels starts a primary, one replica and n sentinels (quorum n/2+1, the primary down
// after 1 s) monitoring them as master set master, for this test; it returns once every sentinel
// sees the replica up.
func RedisSentinels(t testing.TB, master string, n int) (primary, replica *devstack.Redis, sentinels []*devstack.Sentinel) {
	t.Helper()
	primary, replica = RedisReplicated(t)
	ctx, cancel := startCtx(t, startTimeout)
	defer cancel()
	for range n {
		s, err := devstack.StartSentinel(ctx, devstack.SentinelConfig{
			Dir: dir(t, "sentinel"), Master: master, Primary: primary.Addr, Quorum: n/2 + 1,
			DownAfter: time.Second, FailoverTimeout: 10 * time.Second, Replicas: 1, Mode: devstack.Attached,
		})
		if err != nil {
			t.Fatalf("devstacktest: start sentinel: %v", err)
		}
		t.Cleanup(func() { _ = s.Stop() })
		sentinels = append(sentinels, s)
	}
	return primary, replica, sentinels
}

// RedisCluster starts a Redis Cluster of 3 masters with one replica each, stopped at cleanup.
func RedisCluster(t testing.TB) *devstack.RedisCluster {
	t.Helper()
	ensureInstalled(t)
	ctx, cancel := startCtx(t, startTimeout)
	defer cancel()
	c, err := devstack.StartRedisCluster(ctx, dir(t, "redis-cluster"), 3, 1, devstack.Attached)
	if err != nil {
		t.Fatalf("devstacktest: start redis cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

// Kafka starts a kafkad broker (kfake with persistence and compaction) for this test, stopped at
// cleanup.
func Kafka(t testing.TB) *devstack.Kafka {
	t.Helper()
	bin := KafkadBin(t)
	ctx, cancel := startCtx(t, startTimeout)
	defer cancel()
	k, err := devstack.StartKafka(ctx, devstack.KafkaConfig{Bin: bin, Dir: dir(t, "kafka"), Mode: devstack.Attached})
	if err != nil {
		t.Fatalf("devstacktest: start kafka: %v", err)
	}
	t.Cleanup(func() { _ = k.Stop() })
	return k
}

// KafkadBin builds tools/cmd/kafkad once per test binary and returns its path.
func KafkadBin(t testing.TB) string {
	t.Helper()
	kafkadOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			kafkadErr = err
			return
		}
		kafkadBin, kafkadErr = buildBinary(root, filepath.Join(root, "tools"), "kafkad", "./cmd/kafkad")
	})
	if kafkadErr != nil {
		t.Fatalf("devstacktest: build kafkad: %v", kafkadErr)
	}
	return kafkadBin
}

// TemporalBin returns the temporal CLI at .run/bin/temporal, building it from the tool dependency
// of the tools/temporal module if it is missing (several minutes the first time).
func TemporalBin(t testing.TB) string {
	t.Helper()
	temporalOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			temporalErr = err
			return
		}
		p := filepath.Join(root, ".run", "bin", "temporal")
		if _, err := os.Stat(p); err == nil {
			temporalBin = p
			return
		}
		temporalBin, temporalErr = buildBinary(root, filepath.Join(root, "tools", "temporal"), "temporal", "github.com/temporalio/cli/cmd/temporal")
	})
	if temporalErr != nil {
		t.Fatalf("devstacktest: build temporal CLI: %v", temporalErr)
	}
	return temporalBin
}

// buildBinary builds pkg of modDir into root/.run/bin/name.
func buildBinary(root, modDir, name, pkg string) (string, error) {
	dst := filepath.Join(root, ".run", "bin", name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	outside := modDir != filepath.Join(root, "tools") // tools/temporal is kept outside go.work
	if err := devstack.GoBuild(ctx, modDir, pkg, dst, outside); err != nil {
		return "", err
	}
	return dst, nil
}

// Temporal returns the package's shared Temporal dev server (headless, distcache's search
// attributes registered), starting it on first use. Tests isolate themselves with their own task
// queues and workflow ids.
func Temporal(t testing.TB) *devstack.Temporal {
	t.Helper()
	bin := TemporalBin(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedT == nil {
		ctx, cancel := startCtx(t, temporalStartTimeout)
		defer cancel()
		tmp, err := devstack.StartTemporal(ctx, devstack.TemporalConfig{Bin: bin, Dir: dir(t, "temporal"), Headless: true,
			Mode: devstack.Attached, SearchAttributes: devstack.SearchAttributes})
		if err != nil {
			t.Fatalf("devstacktest: start temporal: %v", err)
		}
		sharedT = tmp
		stops = append(stops, tmp.Stop)
	}
	return sharedT
}

// TemporalOption changes a test's own Temporal dev server (OwnTemporal).
type TemporalOption func(*devstack.TemporalConfig)

// WithoutSearchAttributes starts the server without distcache's search attributes
// (devstack.SearchAttributes), as a cluster where nobody registered them.
func WithoutSearchAttributes() TemporalOption {
	return func(c *devstack.TemporalConfig) { c.SearchAttributes = nil }
}

// WithUI starts the server with its Web UI (Temporal.UIURL) on a free port.
func WithUI() TemporalOption {
	return func(c *devstack.TemporalConfig) { c.Headless = false }
}

// OwnTemporal starts a Temporal dev server for this test alone, stopped at cleanup: headless and
// with distcache's search attributes registered unless opts say otherwise. Tests that stop, start
// or restart Temporal use it instead of the shared one; Start after Stop reuses the same port and
// database file.
func OwnTemporal(t testing.TB, opts ...TemporalOption) *devstack.Temporal {
	t.Helper()
	bin := TemporalBin(t)
	ctx, cancel := startCtx(t, temporalStartTimeout)
	defer cancel()
	cfg := devstack.TemporalConfig{Bin: bin, Dir: dir(t, "temporal"), Headless: true, Mode: devstack.Attached,
		SearchAttributes: devstack.SearchAttributes}
	for _, o := range opts {
		o(&cfg)
	}
	tmp, err := devstack.StartTemporal(ctx, cfg)
	if err != nil {
		t.Fatalf("devstacktest: start temporal: %v", err)
	}
	t.Cleanup(func() { _ = tmp.Stop() })
	return tmp
}

// Eventually polls cond every 10 ms until it returns true or timeout passes, then fails the test
// with msg. It never sleeps longer than needed.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Transact writes recs in one Kafka transaction of the transactional client cl and commits it, as
// the core-publisher does; on a failure it aborts the transaction and returns the error.
// beforeCommit, when not nil, runs after the records are written and before the commit: a test
// kills the broker there to leave the transaction open at a crash.
func Transact(ctx context.Context, cl *kgo.Client, recs []*kgo.Record, beforeCommit func()) error {
	abort := func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = cl.AbortBufferedRecords(actx)
		_ = cl.EndTransaction(actx, kgo.TryAbort)
	}
	if err := cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		abort()
		return fmt.Errorf("produce: %w", err)
	}
	if beforeCommit != nil {
		beforeCommit()
	}
	if err := cl.EndTransaction(pctx, kgo.TryCommit); err != nil {
		abort()
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

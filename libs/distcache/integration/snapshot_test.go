package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
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

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

// The edge process of TestSnapshotRestartAfterKill9WithRedisDown: the test binary run again with
// edgeEnv=1 and these variables (TestMain then runs runEdgeProcess).
const (
	edgeEnv      = "DISTCACHE_TEST_EDGE"      // "1" in the edge process
	edgeAddrEnv  = "DISTCACHE_TEST_EDGE_ADDR" // Redis
	edgeDirEnv   = "DISTCACHE_TEST_EDGE_DIR"  // snapshot directory
	edgeProjEnv  = "DISTCACHE_TEST_EDGE_PROJ"
	edgeKeysEnv  = "DISTCACHE_TEST_EDGE_KEYS" // it holds keyN(0..n-1)
	edgeLinePfx  = "EDGE "
	edgeLifetime = 2 * time.Minute // it exits on its own if nobody kills it
)

// runEdgeProcess is the edge process that TestSnapshotRestartAfterKill9WithRedisDown starts (the
// test binary again, with edgeEnv set: TestMain runs this instead of the tests) and kills with
// SIGKILL. It follows a projection with snapshots every 50 ms, reads keyN(0..n-1) so that it holds
// them, prints "EDGE held n", then prints "EDGE snapshot <writes> <changes seen>" after each
// snapshot it writes. It never returns.
func runEdgeProcess() {
	fail := func(format string, args ...any) {
		fmt.Printf(edgeLinePfx+"error "+format+"\n", args...)
		os.Exit(2)
	}
	ctx := context.Background()
	proj := os.Getenv(edgeProjEnv)
	n, err := strconv.Atoi(os.Getenv(edgeKeysEnv))
	if err != nil {
		fail("%s: %v", edgeKeysEnv, err)
	}
	c, err := distcache.New(ctx, append(fastOpts(), distcache.WithAddrs(os.Getenv(edgeAddrEnv)),
		distcache.WithProjections(proj), distcache.WithSnapshot(os.Getenv(edgeDirEnv)),
		distcache.WithSnapshotInterval(50*time.Millisecond))...)
	if err != nil {
		fail("New: %v", err)
	}
	for i := range n {
		if _, err := c.Get(ctx, proj, keyN(i)); err != nil {
			fail("Get %s: %v", keyN(i), err)
		}
	}
	fmt.Printf(edgeLinePfx+"held %d\n", n)
	// Report each snapshot written from now on (a reporter, not a wait: it runs until killed).
	var reported uint64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for end := time.After(edgeLifetime); ; {
		select {
		case <-end:
			os.Exit(0)
		case <-tick.C:
		}
		s := stats(c, proj)
		if s.SnapshotWriteErrors > 0 {
			fail("snapshot write errors: %d", s.SnapshotWriteErrors)
		}
		if s.SnapshotWrites != reported {
			reported = s.SnapshotWrites
			fmt.Printf(edgeLinePfx+"snapshot %d %d\n", s.SnapshotWrites, s.ChangesSeen)
		}
	}
}

// edgeProcess is a running runEdgeProcess.
type edgeProcess struct {
	cmd   *exec.Cmd
	lines chan string // its "EDGE ..." lines, without the prefix
}

func startEdge(t *testing.T, addr, dir string, keys int) *edgeProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0]) // TestMain sees edgeEnv and runs runEdgeProcess
	cmd.Env = append(os.Environ(), edgeEnv+"=1", edgeAddrEnv+"="+addr, edgeDirEnv+"="+dir,
		edgeProjEnv+"="+proj, edgeKeysEnv+"="+strconv.Itoa(keys))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the test binary
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start edge process: %v", err)
	}
	e := &edgeProcess{cmd: cmd, lines: make(chan string, 10_000)}
	go func() {
		defer close(e.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), edgeLinePfx); ok {
				e.lines <- line
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return e
}

// next returns the edge's next line, failing the test if it reports an error, exits or says
// nothing within wait.
func (e *edgeProcess) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-e.lines:
		if !ok {
			t.Fatal("the edge process exited")
		}
		if strings.HasPrefix(line, "error ") {
			t.Fatalf("edge process: %s", line)
		}
		return line
	case <-time.After(wait):
		t.Fatalf("the edge process said nothing for %v", wait)
		return ""
	}
}

// writeLoad writes to keyN(0..keys-1) of generation 1 with distcache.Publisher.Apply, in batches
// of 20 keys at increasing versions, until stopped.
type writeLoad struct {
	batches atomic.Int64
	stop    chan struct{}
	done    chan error
}

func startWriteLoad(pub *distcache.Publisher, keys int) *writeLoad {
	l := &writeLoad{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		version := int64(1)
		for b := 0; ; b++ {
			select {
			case <-l.stop:
				l.done <- nil
				return
			default:
			}
			version++
			changes := make([]distcache.Change, 0, 20)
			for j := range 20 {
				k := keyN((b*20 + j) % keys)
				changes = append(changes, distcache.Change{Key: k, Value: val(k, version), Version: version})
			}
			if _, err := pub.Apply(context.Background(), proj, 1, changes); err != nil {
				l.done <- err
				return
			}
			l.batches.Add(1)
		}
	}()
	return l
}

func (l *writeLoad) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	if err := <-l.done; err != nil {
		t.Fatalf("write load: %v", err)
	}
}

// redisVersion reads key's version in generation gen straight from Redis.
func redisVersion(t *testing.T, ctx context.Context, rdb *redis.Client, gen int64, key string) int64 {
	t.Helper()
	s, err := rdb.Get(ctx, distcache.ValueKey(proj, gen, key)).Result()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	v, err := distcache.ParseVersionHex(s)
	if err != nil {
		t.Fatalf("GET %s = %q: %v", key, s, err)
	}
	return v
}

// versionReader reads held keys with GetEntry and fails the test at once on an error, a value
// that does not match its version, or a version lower than one it returned before.
type versionReader struct {
	t    *testing.T
	c    *distcache.Client
	seen map[string]int64
}

func (r *versionReader) read(ctx context.Context, key string) distcache.Entry {
	r.t.Helper()
	e, err := r.c.GetEntry(ctx, proj, key)
	if err != nil {
		r.t.Fatalf("GetEntry(%s): %v", key, err)
	}
	if !bytes.Equal(e.Value, val(key, e.Version)) {
		r.t.Fatalf("GetEntry(%s) = %q at version %d", key, e.Value, e.Version)
	}
	if e.Version < r.seen[key] {
		r.t.Fatalf("GetEntry(%s): version %d after %d: a version regression", key, e.Version, r.seen[key])
	}
	r.seen[key] = e.Version
	return e
}

// TestSnapshotRestartAfterKill9WithRedisDown: an edge process with snapshots is killed with
// SIGKILL while a writer updates the keys it holds; Redis is stopped; a new Client on the same
// snapshot directory starts with Redis down (New succeeds without it), serves every key the
// killed edge held, marked Stale, with no error; when Redis comes back it replays the changes
// made after the snapshot from its saved stream position and converges to Redis's values,
// never returning a version lower than one it returned before.
func TestSnapshotRestartAfterKill9WithRedisDown(t *testing.T) {
	t.Parallel()
	r := devstacktest.RedisWith(t, devstack.RedisConfig{Persist: true}) // its data survives a restart
	rdb := r.Client()
	t.Cleanup(func() { _ = rdb.Close() })
	pub := newPublisher(t, rdb)
	ctx := ctxT(t)
	const keys = 200
	seed := make([]distcache.Change, keys)
	for i := range seed {
		seed[i] = distcache.Change{Key: keyN(i), Value: val(keyN(i), 1), Version: 1}
	}
	if _, err := pub.Apply(ctx, proj, 1, seed); err != nil {
		t.Fatal(err)
	}
	mustCutover(t, pub, proj, 1)
	dir := t.TempDir()

	edge := startEdge(t, r.Addr, dir, keys)
	if line := edge.next(t); line != "held "+strconv.Itoa(keys) {
		t.Fatalf("edge process: %q, want held %d", line, keys)
	}
	load := startWriteLoad(pub, keys)
	// Kill it once it has written snapshots holding changes of the load: the second snapshot
	// written after it had seen 100 changes.
	for after := 0; after < 2; {
		var writes, seen int
		if _, err := fmt.Sscanf(edge.next(t), "snapshot %d %d", &writes, &seen); err != nil {
			t.Fatal(err)
		}
		if seen >= 100 {
			after++
		}
	}
	if err := edge.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = edge.cmd.Wait()
	if ws, ok := edge.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("edge process ended with %v, want killed by SIGKILL", edge.cmd.ProcessState)
	}
	// Changes the dead edge never saw.
	atKill := load.batches.Load()
	devstacktest.Eventually(t, wait, func() bool { return load.batches.Load() >= atKill+20 }, "the write load stalled")
	load.end(t)
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	c := newClient(t, distcache.WithAddrs(r.Addr), distcache.WithProjections(proj),
		distcache.WithSnapshot(dir), distcache.WithSnapshotInterval(50*time.Millisecond),
		distcache.WithLogger(testLogger(t, nil)))
	t.Logf("New with Redis down, from the snapshot: %v", time.Since(start))
	if s := stats(c, proj); s.SnapshotEntriesLoaded != keys || s.Connected {
		t.Fatalf("stats after New = %+v; want %d entries loaded, not connected", s, keys)
	}
	rd := &versionReader{t: t, c: c, seen: map[string]int64{}}
	updated := 0
	for round := range 3 {
		for i := range keys {
			e := rd.read(ctx, keyN(i))
			if !e.Stale {
				t.Fatalf("round %d: %s served as fresh with Redis down", round, keyN(i))
			}
			if round == 0 && e.Version > 1 {
				updated++
			}
		}
	}
	if updated == 0 {
		t.Fatal("the snapshot holds none of the load's changes")
	}
	t.Logf("%d of %d keys served from the snapshot at a version of the load", updated, keys)

	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	want := make([]int64, keys)
	for i := range want {
		want[i] = redisVersion(t, ctx, rdb, 1, keyN(i))
	}
	devstacktest.Eventually(t, wait, func() bool {
		current := true
		for i := range keys {
			if e := rd.read(ctx, keyN(i)); e.Version != want[i] || e.Stale {
				current = false
			}
		}
		return current
	}, "the client did not converge to Redis's values")
	s := stats(c, proj)
	if s.Gaps != 0 || s.Rebuilds != 0 || s.Replays == 0 {
		t.Fatalf("stats = %+v; want the missed changes replayed from the saved position, no revalidation", s)
	}
	if s.Misses != 0 || s.FetchErrors != 0 {
		t.Fatalf("stats = %+v; want every read served from memory", s)
	}
}

// holdAndClose starts a Client with snapshots in dir, reads keyN(0..keys-1) so that it holds them,
// and closes it, which writes its final snapshot.
func holdAndClose(t *testing.T, rdb *redis.Client, projName, dir string, keys int) {
	t.Helper()
	ctx := ctxT(t)
	c, err := distcache.New(ctx, append(fastOpts(), distcache.WithRedis(rdb), distcache.WithProjections(projName),
		distcache.WithSnapshot(dir))...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if _, err := c.Get(ctx, projName, keyN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var s distcache.ProjectionStats
	for _, p := range c.Stats().Projections {
		if p.Name == projName {
			s = p
		}
	}
	if s.SnapshotWrites != 1 || s.SnapshotBytes == 0 {
		t.Fatalf("stats after Close = %+v; want the final snapshot written", s)
	}
}

// TestSnapshotResumesFromPosition: the changes made while the edge was down are replayed from the
// snapshot's stream position, and nothing else is read: no revalidation, no miss.
func TestSnapshotResumesFromPosition(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	const keys = 50
	for i := range keys {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	dir := t.TempDir()
	holdAndClose(t, rdb, proj, dir, keys)

	// While the edge is down: half the keys change, one is deleted.
	for i := range keys / 2 {
		mustSet(t, pub, proj, 1, keyN(i), 2)
	}
	if _, err := pub.DeleteGen(ctx, proj, 1, keyN(keys-1), 3); err != nil {
		t.Fatal(err)
	}

	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj), distcache.WithSnapshot(dir))
	devstacktest.Eventually(t, wait, func() bool {
		for i := range keys - 1 {
			want := int64(1)
			if i < keys/2 {
				want = 2
			}
			if e, err := c.GetEntry(ctx, proj, keyN(i)); err != nil || e.Version != want || e.Stale {
				return false
			}
		}
		_, err := c.Get(ctx, proj, keyN(keys-1))
		return errors.Is(err, distcache.ErrNotFound)
	}, "the changes made while the edge was down were not replayed")
	s := stats(c, proj)
	if s.SnapshotEntriesLoaded != keys || s.Replays != keys/2+1 {
		t.Fatalf("stats = %+v; want %d entries loaded and %d changes replayed", s, keys, keys/2+1)
	}
	if s.Gaps != 0 || s.Rebuilds != 0 || s.Misses != 0 || s.Fills != 0 {
		t.Fatalf("stats = %+v; want no gap, no revalidation, no miss", s)
	}
}

// TestSnapshotTrimmedPositionRevalidates: when the snapshot's stream position was trimmed away
// while the edge was down, the client revalidates: it refetches every key it held (no miss) and
// ends current.
func TestSnapshotTrimmedPositionRevalidates(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	const keys = 50
	for i := range keys {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	dir := t.TempDir()
	holdAndClose(t, rdb, proj, dir, keys)

	for i := range keys {
		mustSet(t, pub, proj, 1, keyN(i), 2)
	}
	// Keep only the last entry: the snapshot's position is gone.
	if err := rdb.XTrimMaxLen(ctx, distcache.StreamKey(proj, 1), 1).Err(); err != nil {
		t.Fatal(err)
	}

	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj), distcache.WithSnapshot(dir))
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).Gaps == 1 }, "no gap detected")
	devstacktest.Eventually(t, wait, func() bool {
		for i := range keys {
			if e, err := c.GetEntry(ctx, proj, keyN(i)); err != nil || e.Version != 2 || e.Stale {
				return false
			}
		}
		return true
	}, "keys not current after the revalidation")
	if s := stats(c, proj); s.Rebuilds != 1 || s.Misses != 0 || s.SnapshotEntriesLoaded != keys {
		t.Fatalf("stats = %+v; want one revalidation that refetched the %d loaded keys, no miss", s, keys)
	}
}

// TestSnapshotGenerationChanged: a snapshot of generation 1, loaded after a cutover to
// generation 2, is never served as current: until the client has refetched every held key from
// generation 2, reads return generation 1's values marked Stale; then generation 2's.
func TestSnapshotGenerationChanged(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	const keys = 50
	for i := range keys {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	dir := t.TempDir()
	holdAndClose(t, rdb, proj, dir, keys)

	for i := range keys {
		mustSet(t, pub, proj, 2, keyN(i), 10)
	}
	mustCutover(t, pub, proj, 2)

	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj), distcache.WithSnapshot(dir))
	devstacktest.Eventually(t, wait, func() bool {
		current := true
		for i := range keys {
			e, err := c.GetEntry(ctx, proj, keyN(i))
			switch {
			case err != nil:
				t.Fatalf("GetEntry(%s): %v", keyN(i), err)
			case e.Version == 1 && !e.Stale:
				t.Fatalf("GetEntry(%s): generation 1's value served as current", keyN(i))
			case e.Version != 10:
				current = false
			}
		}
		return current && c.Generation(proj) == 2
	}, "generation 2 not served")
	if s := stats(c, proj); s.Cutovers != 1 || s.Misses != 0 {
		t.Fatalf("stats = %+v; want one cutover that refetched the held keys, no miss", s)
	}
}

// TestSnapshotPastStalenessBound: the staleness bound runs from the last contact with Redis that
// the snapshot records, so a snapshot older than the bound is loaded but not served while Redis
// is down: reads fail with ErrUnavailable instead.
func TestSnapshotPastStalenessBound(t *testing.T) {
	t.Parallel()
	r, rdb, pub := standalone(t)
	ctx := ctxT(t)
	const keys = 10
	for i := range keys {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	dir := t.TempDir()
	holdAndClose(t, rdb, proj, dir, keys)
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, distcache.WithAddrs(r.Addr), distcache.WithProjections(proj), distcache.WithSnapshot(dir),
		distcache.WithStalenessBound(time.Millisecond))
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := c.Get(dctx, proj, keyN(0)); !errors.Is(err, distcache.ErrUnavailable) {
		t.Fatalf("Get past the staleness bound = %v, want ErrUnavailable", err)
	}
	if s := stats(c, proj); s.SnapshotEntriesLoaded != keys || !s.Stale {
		t.Fatalf("stats = %+v; want the snapshot loaded and reads not fresh", s)
	}
}

// TestSnapshotCorruptIsIgnored: a snapshot that is damaged (a flipped byte, cut short, another
// magic or format version, empty) is never served: New starts normally from Redis, logs the
// reason and counts it.
func TestSnapshotCorruptIsIgnored(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	const keys = 20
	tests := []struct {
		name   string
		damage func(b []byte) []byte
		reason distcache.SnapshotRejectReason
	}{
		{"byte flipped", func(b []byte) []byte {
			i := bytes.Index(b, val(keyN(3), 1))
			b[i+2] ^= 0x01
			return b
		}, distcache.SnapshotRejectChecksum},
		{"cut short", func(b []byte) []byte { return b[:len(b)*2/3] }, distcache.SnapshotRejectTruncated},
		{"wrong magic", func(b []byte) []byte { copy(b, "PNG"); return b }, distcache.SnapshotRejectMagic},
		{"wrong format version", func(b []byte) []byte { b[6] = 9; return b }, distcache.SnapshotRejectVersion},
		{"empty", func([]byte) []byte { return nil }, distcache.SnapshotRejectTruncated},
	}
	for ti, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			name := proj + "_corrupt" + strconv.Itoa(ti)
			for i := range keys {
				mustSet(t, pub, name, 1, keyN(i), 1)
			}
			mustCutover(t, pub, name, 1)
			dir := t.TempDir()
			holdAndClose(t, rdb, name, dir, keys)
			path := filepath.Join(dir, name+".snapshot")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.damage(data), 0o600); err != nil {
				t.Fatal(err)
			}
			for i := range keys {
				mustSet(t, pub, name, 1, keyN(i), 2)
			}

			var logs syncBuffer
			c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(name), distcache.WithSnapshot(dir),
				distcache.WithLogger(testLogger(t, &logs)))
			for i := range keys {
				e, err := c.GetEntry(ctx, name, keyN(i))
				if err != nil || e.Version != 2 || e.Stale {
					t.Fatalf("GetEntry(%s) = version %d stale %v, %v; want version 2 from Redis", keyN(i), e.Version, e.Stale, err)
				}
			}
			var s distcache.ProjectionStats
			for _, p := range c.Stats().Projections {
				if p.Name == name {
					s = p
				}
			}
			if s.SnapshotEntriesLoaded != 0 || s.SnapshotRejections[tt.reason] != 1 || s.Misses != keys {
				t.Fatalf("stats = %+v; want no entry loaded, one rejection (%v), every key a miss", s, tt.reason)
			}
			if log := logs.String(); !strings.Contains(log, "snapshot rejected") || !strings.Contains(log, "reason="+tt.reason.String()) {
				t.Fatalf("log does not give the rejection and its reason %q:\n%s", tt.reason, log)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
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

// testLogger logs at info level to t (and to also, when not nil).
func testLogger(t *testing.T, also *syncBuffer) *slog.Logger {
	w := &testWriter{t: t, also: also}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	t    *testing.T
	also *syncBuffer
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	if w.also != nil {
		return w.also.Write(p)
	}
	return len(p), nil
}

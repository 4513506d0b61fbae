package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// TestRedisHangs runs the service as a real process and stops its Redis with SIGSTOP (connections
// stay open, nothing answers) while a record is being written and while the registry changes
// (the topic's consumer restarts, its writes stuck). For longer than go-redis's own read timeout,
// every HTTP endpoint answers within its deadline: /readyz within its 2 s check timeout, 503
// naming redis; /healthz, /status and /metrics at once. After SIGCONT the service is ready again
// and the records produced during and after the hang reach Redis in both generations.
func TestRedisHangs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStack(ctx, t)
	reg, rdb := st.reg, st.rdb
	p := prodtest.NewProducer(t, st.kafka.Addr, "distcache", "users")
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
	startChild(t, []string{
		"PRODUCER_DATABASE_URL=" + st.dbURL, "PRODUCER_REDIS_ADDRS=" + st.redis.Addr, "PRODUCER_KAFKA_BROKERS=" + st.kafka.Addr,
		"PRODUCER_HTTP_ADDR=" + httpAddr, "PRODUCER_RELOAD_INTERVAL=1h",
	})
	base := "http://" + httpAddr
	devstacktest.Eventually(t, 30*time.Second, func() bool { c, _ := get(base + "/readyz"); return c == 200 }, "/readyz answers 200")
	upsert := func(id string) {
		t.Helper()
		p.Produce(p.Upsert(id, map[string]any{"id": id, "email": "U" + id + "@X.io", "status": "active"}))
	}
	inRedis := func(gen int64, ids ...string) func() bool {
		return func() bool {
			got, err := prodtest.ReadGeneration(ctx, rdb, usersByEmail.Name, gen)
			if err != nil {
				return false
			}
			for _, id := range ids {
				if _, ok := got["u"+id+"@x.io"]; !ok {
					return false
				}
			}
			return true
		}
	}
	upsert("1")
	devstacktest.Eventually(t, 30*time.Second, inRedis(gen1, "1"), "user 1 reaches Redis")

	pid := st.redis.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT redis: %v", err)
			}
		}
	}
	t.Cleanup(resume)
	upsert("2") // its write hangs
	gen2, _, err := reg.AllocateGeneration(ctx, usersByEmail, "wf-2")
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.SetState(ctx, usersByEmail.Name, gen2, workflows.StateTailing, &zero); err != nil {
		t.Fatal(err)
	}

	client := &http.Client{Timeout: 20 * time.Second}
	timed := func(path string) (int, string, time.Duration) {
		start := time.Now()
		resp, err := client.Get(base + path)
		took := time.Since(start)
		if err != nil {
			return 0, err.Error(), took
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), took
	}
	// Behaviour, not speed: the margins are wide for a loaded machine; a wedged endpoint waits
	// for go-redis's 5 s read timeout or a consumer's 10 s drain.
	const readyzLimit = 2*time.Second + 1500*time.Millisecond // the check timeout + margin
	const quickLimit = 1500 * time.Millisecond
	rounds := 0
	for hangStart := time.Now(); time.Since(hangStart) < 8*time.Second; rounds++ {
		for _, path := range []string{"/healthz", "/status", "/metrics"} {
			code, body, took := timed(path)
			if code != 200 || took > quickLimit {
				t.Errorf("GET %s while Redis hangs: %d in %v (want 200 within %v): %.200s", path, code, took, quickLimit, body)
			}
		}
		code, body, took := timed("/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"not ready: `) ||
			!strings.Contains(body, `"name":"redis","ok":false`) || took > readyzLimit {
			t.Errorf("GET /readyz while Redis hangs: %d in %v, want 503 naming redis within %v: %s", code, took, readyzLimit, body)
		}
		if t.Failed() {
			break
		}
	}
	t.Logf("%d rounds of requests while Redis hung", rounds)

	resume()
	devstacktest.Eventually(t, 30*time.Second, func() bool { c, _ := get(base + "/readyz"); return c == 200 }, "/readyz answers 200 after SIGCONT")
	upsert("3")
	for _, gen := range []int64{gen1, gen2} {
		devstacktest.Eventually(t, 30*time.Second, inRedis(gen, "1", "2", "3"), "users 1–3 reach generation %d after the hang", gen)
	}
	if c, body := get(base + "/status"); c != 200 || !strings.Contains(body, fmt.Sprintf(`"generation":%d`, gen2)) {
		t.Errorf("/status after the hang = %d %s, want both generations", c, body)
	}
}

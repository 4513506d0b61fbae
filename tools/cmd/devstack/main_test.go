package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

var pidRE = regexp.MustCompile(`(?m)^(postgres|redis-primary|redis-replica|sentinel-[123]|kafka|temporal)\s+\S+\s+(\d+)\s+healthy`)

// TestUpStatusDown runs the stack CLI as make up / make status / make down do, on ports shifted
// away from the default stack's: up starts every component healthy, a second up reuses them,
// status names each with its address and health, and down leaves no process behind.
func TestUpStatusDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"kafkad": devstacktest.KafkadBin(t), "temporal": devstacktest.TemporalBin(t)} {
		if err := os.Symlink(src, filepath.Join(dir, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	// An offset that moves the stack below the kernel's ephemeral port range (32768 and up), where
	// the free ports other tests pick and outgoing connections live, so nothing else takes them.
	off := freeOffset(t)
	offset := strconv.Itoa(off)
	cli := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, append([]string{"-dir", dir, "-port-offset", offset}, args...), &out); err != nil {
			t.Fatalf("devstack %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	t.Cleanup(func() {
		var out bytes.Buffer
		_ = run(context.Background(), []string{"-dir", dir, "-port-offset", offset, "down"}, &out)
	})

	cli("up")
	first := pids(t, cli("status"))
	if len(first) != 8 { // PostgreSQL, a Redis primary and replica, three sentinels, the broker, Temporal
		t.Fatalf("status shows %d healthy components; want 8:\n%s", len(first), cli("status"))
	}
	cli("up") // idempotent: reuses what runs
	second := pids(t, cli("status"))
	for name, pid := range first {
		if second[name] != pid {
			t.Errorf("%s: pid %d after the second up; want the same %d", name, second[name], pid)
		}
	}
	env := cli("env")
	if !strings.Contains(env, "DISTCACHE_KAFKA_BROKERS=127.0.0.1:") || !strings.Contains(env, "DISTCACHE_REDIS_SENTINEL_MASTER=distcache") {
		t.Errorf("env lacks the broker address or the sentinels:\n%s", env)
	}
	// make up registers distcache's search attributes, so builds can be filtered in the UI.
	tc, err := client.Dial(client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", defaultPorts.temporal+off), Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	sas, err := tc.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: "default"})
	tc.Close()
	if err != nil {
		t.Fatalf("list search attributes: %v", err)
	}
	for _, sa := range devstack.SearchAttributes {
		if typ, ok := sas.GetCustomAttributes()[sa.Name]; !ok || !strings.EqualFold(typ.String(), sa.Type) {
			t.Errorf("search attribute %s after up: %v (registered: %t), want %s", sa.Name, typ, ok, sa.Type)
		}
	}
	cli("down")
	for name, pid := range first {
		deadline := time.Now().Add(10 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("%s (pid %d) still runs after down", name, pid)
		}
	}
	if got := pids(t, cli("status")); len(got) != 0 {
		t.Errorf("status after down shows healthy components: %v", got)
	}
}

func pids(t *testing.T, status string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range pidRE.FindAllStringSubmatch(status, -1) {
		pid, _ := strconv.Atoi(m[2])
		out[m[1]] = pid
	}
	return out
}

// freeOffset picks a port offset in [-50000, -27000) whose six stack ports are all free now.
func freeOffset(t *testing.T) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		off := -50000 + rand.IntN(23000)
		free := true
		for _, p := range []int{defaultPorts.postgres, defaultPorts.redisPrimary, defaultPorts.redisReplica, defaultPorts.kafka,
			defaultPorts.temporal, defaultPorts.temporalUI, defaultPorts.sentinels[0], defaultPorts.sentinels[1], defaultPorts.sentinels[2]} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+off))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return off
		}
	}
	t.Fatal("no free port offset found")
	return 0
}

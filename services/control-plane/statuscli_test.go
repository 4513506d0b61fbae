package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows/registry"
)

// TestStatusCommand runs the control-plane (PostgreSQL registry, Redis, Temporal not answering)
// and the `distcache status` command built from cmd/distcache against its REST API, with consumer
// reports written as the cache-producer writes them (registry.ReportConsumers):
//   - a live generation reported a moment ago with lag 0 is a plain row naming its owner, and the
//     command exits 0;
//   - once the reports stop for longer than CONTROLPLANE_CONSUMER_REPORT_STALE (1 s here), the
//     row says "no replica reporting for ...", is red with -color=always, and the command exits 2;
//   - the token is sent (a wrong one is refused, exit 1) and never printed;
//   - -if-up against an address where nothing listens says so and exits 0.
func TestStatusCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	nothing := freeAddr(t) // Temporal: nothing listens (GetStatus answers from the registry)
	l, _, stop := startService(ctx, t, serviceEnv(dbURL, r.Addr, nothing, "CONTROLPLANE_CONSUMER_REPORT_STALE", "1s"))
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := registry.New(pool)
	def := projection.Definition{Name: "users_by_email", Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"}}
	if err := reg.CreateProjection(ctx, def); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.AllocateGeneration(ctx, def, "wf"); err != nil {
		t.Fatal(err)
	}
	end := int64(42)
	if err := reg.SetState(ctx, def.Name, 1, registry.StateLive, &end); err != nil {
		t.Fatal(err)
	}
	report := func() {
		t.Helper()
		if _, err := reg.ReportConsumers(ctx, []registry.ConsumerReport{{Projection: def.Name, Generation: 1, Owner: "cache-producer-7",
			NextOffset: 42, HighWatermark: 42, NewestSourceTime: time.Now().Add(-3 * time.Second)}}); err != nil {
			t.Fatal(err)
		}
	}

	bin := filepath.Join(t.TempDir(), "distcache")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/distcache")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the command: %v\n%s", err, out)
	}
	base := "http://" + l.http.Addr().String()
	status := func(token string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, append([]string{"status", "-url", base}, args...)...)
		cmd.Env = []string{"DISTCACHE_TOKEN=" + token}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			return out.String(), exit.ExitCode()
		case err != nil:
			t.Fatalf("run the command: %v", err)
		}
		return out.String(), 0
	}

	var outputs []string
	report()
	out, code := status(testToken)
	outputs = append(outputs, out)
	if code != 0 || !strings.Contains(out, "users_by_email") || !strings.Contains(out, "cache-producer-7") ||
		!strings.Contains(out, "3s ago") || strings.Contains(out, "\x1b[") {
		t.Errorf("fresh: exit %d, output:\n%s\nwant exit 0, a plain row naming cache-producer-7 with the newest change 3s ago", code, out)
	}
	t.Logf("fresh:\n%s", out)

	devstacktest.Eventually(t, 30*time.Second, func() bool {
		out, code = status(testToken, "-color=always")
		return code == 2
	}, "the command exits 2 once no replica reports")
	if !strings.Contains(out, "no replica reporting for") || !strings.Contains(out, "\x1b[31m") {
		t.Errorf("stale report: output:\n%s\nwant a red row saying no replica is reporting", out)
	}
	t.Logf("no replica reporting:\n%s", out)
	outputs = append(outputs, out)

	if out, code := status("wrong-token-0123456789"); code != 1 || !strings.Contains(out, "401") || strings.Contains(out, "wrong-token") {
		t.Errorf("wrong token: exit %d, output %q; want exit 1 naming HTTP 401 and not the token", code, out)
	}
	for _, o := range outputs {
		if strings.Contains(o, testToken) {
			t.Errorf("the token appears in the output:\n%s", o)
		}
	}
	cmd := exec.CommandContext(ctx, bin, "status", "-if-up", "-url", "http://"+freeAddr(t))
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "does not answer") {
		t.Errorf("-if-up with nothing listening: %v, %q; want exit 0 saying it does not answer", err, out)
	}
}

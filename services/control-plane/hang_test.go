package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows/registry"
)

// TestRedisHangs runs the control-plane (run, as main does) and stops its Redis with SIGSTOP
// (connections stay open, nothing answers). Get, List and Status read only the registry: they
// answer 200 at once. /readyz answers 503 "not ready: redis" within its 5 s deadline. After
// SIGCONT /readyz is ready again. (Temporal is not running: the service is "degraded" throughout,
// which is not what this test is about.)
func TestRedisHangs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	env := serviceEnv(dbURL, r.Addr, freeAddr(t)) // nothing listens there
	l, logs, stop := startService(ctx, t, env)
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
	const name = "hung_users"
	if err := registry.New(pool).CreateProjection(ctx, projection.Definition{
		Name: name, Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"},
	}); err != nil {
		t.Fatal(err)
	}

	base := "http://" + l.http.Addr().String()
	client := &http.Client{Timeout: 30 * time.Second}
	timed := func(path string) (int, string, time.Duration) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		start := time.Now()
		resp, err := client.Do(req)
		took := time.Since(start)
		if err != nil {
			return 0, err.Error(), took
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), took
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		code, _, _ := timed("/readyz")
		return code == 200
	}, "/readyz answers 200 before the hang")

	pid := r.PID()
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

	// Behaviour, not speed: the limits are the deadlines plus a wide margin for a loaded machine.
	const quickLimit = 2 * time.Second
	const readyzLimit = 5*time.Second + 2*time.Second // /readyz's deadline + margin
	for _, path := range []string{"/v1/projections/" + name, "/v1/projections", "/v1/projections/" + name + "/status"} {
		code, body, took := timed(path)
		if code != 200 || !strings.Contains(body, name) || took > quickLimit {
			t.Errorf("GET %s while Redis hangs: %d in %v, want 200 naming %s within %v: %.300s", path, code, took, name, quickLimit, body)
		}
	}
	code, body, took := timed("/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"not ready: redis"`) || took > readyzLimit {
		t.Errorf("GET /readyz while Redis hangs: %d in %v, want 503 \"not ready: redis\" within %v: %s", code, took, readyzLimit, body)
	}
	if code, _, took := timed("/healthz"); code != 200 || took > quickLimit {
		t.Errorf("GET /healthz while Redis hangs: %d in %v", code, took)
	}

	resume()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		code, _, _ := timed("/readyz")
		return code == 200
	}, "/readyz answers 200 after SIGCONT")
	if code, body, _ := timed("/v1/projections/" + name + "/status"); code != 200 {
		t.Errorf("status after the hang: %d %s", code, body)
	}
	if t.Failed() {
		t.Logf("service log:\n%s", logs)
	}
}

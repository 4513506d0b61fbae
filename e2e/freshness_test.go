package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/tools/devstacktest"
)

// consumerView is GET /v1/projections/{name}/status's generations[].consumer (the parts checked).
type consumerView struct {
	State            string  `json:"state"`
	Message          string  `json:"message"`
	Owner            string  `json:"owner"`
	LagRecords       string  `json:"lag_records"` // an int64: a JSON string
	NewestChangeTime string  `json:"newest_change_time"`
	NewestChangeAge  float64 `json:"newest_change_age_seconds"`
}

// TestFreshnessThroughThePipeline runs the whole pipeline on its own stack (PostgreSQL, Redis, the
// broker, Temporal, the three services as processes, two cache-producer replicas sharing the topic
// through their consumer group) and follows what GetStatus and `distcache status` say of the live
// generation:
//   - a change committed in the core database: the consumer is reporting, owned by one replica,
//     with lag 0 and a newest change no older than that commit, and the command exits 0;
//   - the owner killed (SIGKILL): the other replica takes the topic over, and GetStatus names it
//     as the owner once it applied the next change;
//   - that one killed too, while changes are committed: after CONTROLPLANE_CONSUMER_REPORT_STALE
//     (3 s here) GetStatus says "no replica reporting", and the command prints the row and exits
//     2;
//   - a replica started again: reporting, lag 0, the newest change the last one committed; the
//     command exits 0.
func TestFreshnessThroughThePipeline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := devstacktest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is private to this user, and PostgreSQL runs as the postgres user.
	dir, err := os.MkdirTemp("", "freshness-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const token = "e2e-freshness-token-0123456789"
	var out strings.Builder
	p, err := pipeline.Start(ctx, pipeline.Config{RepoDir: root, RunDir: dir, Items: 200, Token: token, Out: &out,
		ProducerReplicas: 2,
		ProducerEnv: []string{"PRODUCER_STATUS_REPORT_INTERVAL=200ms",
			"PRODUCER_GROUP_SESSION_TIMEOUT=6s"}, // the broker's least (kfake)
		ControlEnv: []string{"CONTROLPLANE_CONSUMER_REPORT_STALE=3s"}})
	if err != nil {
		t.Fatalf("pipeline: %v\n%s", err, out.String())
	}
	defer p.Stop()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pipeline output:\n%s\n%s", out.String(), p.LogTails())
		}
	})
	pool, err := pgxpool.New(ctx, p.CoreURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cli, err := pipeline.BuildProgram(ctx, root, "services/control-plane", "./cmd/distcache", filepath.Join(dir, "bin"), "distcache")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + p.ControlHTTP
	live := func() (consumerView, bool) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/projections/"+pipeline.Projection.Name+"/status", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return consumerView{}, false
		}
		defer resp.Body.Close()
		var st struct {
			Generations []struct {
				State    string        `json:"state"`
				Consumer *consumerView `json:"consumer"`
			} `json:"generations"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
			return consumerView{}, false
		}
		for _, g := range st.Generations {
			if g.State == "live" && g.Consumer != nil {
				return *g.Consumer, true
			}
		}
		return consumerView{}, false
	}
	status := func() (string, int) {
		cmd := exec.CommandContext(ctx, cli, "status", "-url", base)
		cmd.Env = []string{"DISTCACHE_TOKEN=" + token}
		var b bytes.Buffer
		cmd.Stdout, cmd.Stderr = &b, &b
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			return b.String(), exit.ExitCode()
		case err != nil:
			t.Fatalf("run distcache status: %v", err)
		}
		return b.String(), 0
	}
	bump := func() time.Time {
		t.Helper()
		before := time.Now()
		if _, err := pipeline.Bump(ctx, pool, []int64{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		return before
	}
	newest := func(c consumerView) time.Time {
		at, _ := time.Parse(time.RFC3339Nano, c.NewestChangeTime)
		return at
	}
	replica := map[string]*pipeline.Program{}
	for _, pr := range p.Producers {
		replica[pr.Name()] = pr
	}
	applied := func(since time.Time, owner func(string) bool) func() bool {
		return func() bool {
			c, ok := live()
			return ok && c.State == "reporting" && c.LagRecords == "0" && !newest(c).Before(since.Add(-time.Second)) && owner(c.Owner)
		}
	}
	anyOwner := func(o string) bool { return replica[o] != nil }

	committed := bump()
	devstacktest.Eventually(t, time.Minute, applied(committed, anyOwner), "GetStatus shows the change committed at %v applied", committed)
	first, _ := live()
	if first.NewestChangeAge > 30 {
		t.Errorf("consumer = %+v; want a newest change seconds old", first)
	}
	if text, code := status(); code != 0 || !strings.Contains(text, first.Owner) {
		t.Errorf("distcache status exited %d:\n%s\nwant 0 and a row owned by %s", code, text, first.Owner)
	}

	// The owner killed: the other replica takes over.
	if err := replica[first.Owner].Kill(); err != nil {
		t.Fatal(err)
	}
	committed = bump()
	devstacktest.Eventually(t, time.Minute, applied(committed, func(o string) bool { return anyOwner(o) && o != first.Owner }),
		"GetStatus names the other replica as the owner once it applied the next change")
	second, _ := live()
	text, code := status()
	if code != 0 || !strings.Contains(text, second.Owner) {
		t.Errorf("distcache status exited %d:\n%s\nwant 0 and a row owned by %s", code, text, second.Owner)
	}
	t.Logf("%s killed, %s took over:\n%s", first.Owner, second.Owner, text)

	// No replica left.
	if err := replica[second.Owner].Kill(); err != nil {
		t.Fatal(err)
	}
	bump()
	var c consumerView
	devstacktest.Eventually(t, time.Minute, func() bool {
		c, _ = live()
		return c.State == "not_reporting"
	}, "GetStatus says no replica reports once both are gone")
	if !strings.Contains(c.Message, "no replica reporting for") || c.Owner != second.Owner {
		t.Errorf("consumer = %+v; want \"no replica reporting for ...\", last owner %s", c, second.Owner)
	}
	text, code = status()
	if code != 2 || !strings.Contains(text, "no replica reporting for") {
		t.Errorf("distcache status exited %d:\n%s\nwant 2 and the row saying no replica reports", code, text)
	}
	t.Logf("both replicas killed:\n%s", text)

	if err := replica[first.Owner].Start(ctx); err != nil {
		t.Fatal(err)
	}
	last := bump()
	devstacktest.Eventually(t, time.Minute, applied(last, func(o string) bool { return o == first.Owner }),
		"GetStatus shows %s back, caught up", first.Owner)
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		text, code = status()
		return code == 0
	}, "distcache status exits 0 again")
	t.Logf("%s back:\n%s", first.Owner, text)
}

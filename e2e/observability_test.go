package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

// The dashboards and the alert rules, relative to the repository root (their chart copies are
// kept equal by deploy/check's TestChartCopiesMatch).
var (
	dashboardFiles = []string{"deploy/grafana/distcache-pipeline.json", "deploy/grafana/distcache-edges.json"}
	rulesFile      = "deploy/prometheus/distcache-rules.yaml"
)

// eventOnly are metrics the dashboards or rules use whose series appear only after an event this
// test does not cause (a labelled counter has no series until something is counted). Each names
// the source file that must declare it, so a typo or a rename still fails.
var eventOnly = map[string]string{
	// Two replicas claiming one generation: needs a consumer-group handover under load.
	"distcache_producer_fenced_writes_total": "services/cache-producer/internal/prodmetrics/prodmetrics.go",
}

// TestDashboardsAndAlerts runs the whole pipeline (PostgreSQL, Redis, the broker, Temporal, the
// three services and examples/edge-service as processes) with traffic through the edge and a
// dead letter at each stage, then:
//   - exported: every metric the dashboards and the rules use is in some service's /metrics;
//   - prometheus: a real Prometheus scrapes the services with the rules loaded; every panel
//     expression and every rule expression evaluates without error through /api/v1/query,
//     every referenced metric has a series, and every rule evaluates healthy;
//   - promtool: promtool check rules accepts the rules file.
func TestDashboardsAndAlerts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	root, err := devstacktest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	prom, err := devstack.EnsurePrometheus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	panelExprs := dashboardExprs(t, root)
	ruleNames, ruleExprs := ruleExprs(t, root)
	used := metricNames(append(slices.Clone(panelExprs), ruleExprs...))
	t.Logf("%d panel expressions, %d rules, %d metrics used", len(panelExprs), len(ruleExprs), len(used))

	t.Run("promtool", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, prom.Promtool, "check", "rules", filepath.Join(root, rulesFile)).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
		}
	})

	// Not t.TempDir: its parent is private to this user, and PostgreSQL runs as the postgres user.
	dir, err := os.MkdirTemp("", "dashboards-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	p, err := pipeline.Start(ctx, pipeline.Config{RepoDir: root, RunDir: dir, Items: 200, Out: &progress})
	if err != nil {
		t.Fatalf("start the pipeline: %v\n%s", err, progress.String())
	}
	t.Cleanup(p.Stop)
	edgeAddr := startEdge(ctx, t, root, dir, p.RedisAddr)
	targets := map[string]string{
		pipeline.NamePublisher: p.PublisherAddr, pipeline.NameProducer: p.ProducerAddr,
		pipeline.NameControl: p.ControlHTTP, "edge-service": edgeAddr,
	}
	promURL := startPrometheus(ctx, t, prom.Server, filepath.Join(root, rulesFile), targets)

	pool, err := pgxpool.New(ctx, p.CoreURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	stopTraffic := traffic(ctx, t, pool, "http://"+edgeAddr)
	defer stopTraffic()
	writeDeadLetters(ctx, t, pool)

	// What the panels need before they can show anything: a dead letter at each stage, a
	// freshness observation, reads through the edge.
	for _, w := range []struct{ addr, metric string }{
		{p.PublisherAddr, "distcache_publisher_dead_letters_total"},
		{p.ProducerAddr, "distcache_producer_dead_letters_total"},
		{p.ProducerAddr, "distcache_producer_commit_to_redis_seconds_count"},
		{p.PublisherAddr, "distcache_publisher_commit_to_ack_seconds_count"},
		{edgeAddr, "distcache_client_hits_total"},
		{edgeAddr, "distcache_client_fetch_duration_seconds_count"},
	} {
		devstacktest.Eventually(t, time.Minute, func() bool {
			v, err := pipeline.Metric(ctx, w.addr, w.metric)
			return err == nil && v > 0
		}, "%s at %s stays 0\n%s", w.metric, w.addr, p.LogTails())
	}

	t.Run("exported", func(t *testing.T) {
		exported := map[string]bool{}
		for name, addr := range targets {
			names, err := seriesNames(ctx, addr)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for n := range names {
				exported[n] = true
			}
		}
		for _, m := range used {
			if src, ok := eventOnly[m]; ok {
				b, err := os.ReadFile(filepath.Join(root, src))
				if err != nil {
					t.Fatal(err)
				}
				suffix := strings.TrimPrefix(m, "distcache_producer_")
				if !strings.Contains(string(b), `"`+suffix+`"`) && !strings.Contains(string(b), `"`+m+`"`) {
					t.Errorf("%s: used by the dashboards or rules, declared nowhere in %s", m, src)
				}
				continue
			}
			if !exported[m] {
				t.Errorf("%s: used by the dashboards or rules, exported by no service", m)
			}
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		// Every target up, and enough scrapes in for rates over a minute.
		devstacktest.Eventually(t, 90*time.Second, func() bool {
			res, err := promQuery(ctx, promURL, `min(count_over_time(up[1m])) >= 5 and count(up == 1) == `+strconv.Itoa(len(targets)))
			return err == nil && len(res) == 1
		}, "Prometheus has not scraped every target (%v) up at least 5 times", targets)
		for _, m := range used {
			if _, ok := eventOnly[m]; ok {
				continue
			}
			res, err := promQuery(ctx, promURL, fmt.Sprintf(`count({__name__=%q})`, m))
			if err != nil || len(res) == 0 {
				t.Errorf("%s: no series in Prometheus (err %v)", m, err)
			}
		}
		evaluated, nonEmpty := 0, 0
		for _, e := range append(slices.Clone(panelExprs), ruleExprs...) {
			q := strings.ReplaceAll(e, "$__rate_interval", "1m")
			res, err := promQuery(ctx, promURL, q)
			if err != nil {
				t.Errorf("expression fails: %v\n%s", err, e)
				continue
			}
			evaluated++
			if len(res) > 0 {
				nonEmpty++
			}
		}
		t.Logf("%d expressions evaluated without error (%d panel, %d rule), %d with a result now",
			evaluated, len(panelExprs), len(ruleExprs), nonEmpty)
		// The rules, as Prometheus loaded them from the file, each evaluated healthy.
		devstacktest.Eventually(t, 30*time.Second, func() bool {
			health, err := ruleHealth(ctx, promURL)
			if err != nil || len(health) != len(ruleNames) {
				return false
			}
			for _, h := range health {
				if h != "ok" {
					return false
				}
			}
			return true
		}, "the rules of %s do not all evaluate healthy in Prometheus", rulesFile)
		health, _ := ruleHealth(ctx, promURL)
		for _, n := range ruleNames {
			if _, ok := health[n]; !ok {
				t.Errorf("rule %s not loaded by Prometheus", n)
			}
		}
	})
}

// dashboardExprs returns every panel target's expression of the dashboards.
func dashboardExprs(t *testing.T, root string) []string {
	t.Helper()
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var out []string
	var walk func(file string, raw []json.RawMessage)
	walk = func(file string, raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q has a target without expr", file, p.Title)
					continue
				}
				out = append(out, tg.Expr)
			}
			walk(file, p.Panels)
		}
	}
	for _, f := range dashboardFiles {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []json.RawMessage `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		walk(f, d.Panels)
	}
	if len(out) == 0 {
		t.Fatal("no panel expressions found")
	}
	return out
}

// ruleExprs reads the alert names and expressions of the rules file. The file is plain YAML of
// one known shape; Prometheus itself loads it below, so this reader only needs to find
// "- alert:" and the block scalar of "expr: |".
func ruleExprs(t *testing.T, root string) (names, exprs []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if n, ok := strings.CutPrefix(l, "- alert:"); ok {
			names = append(names, strings.TrimSpace(n))
			continue
		}
		e, ok := strings.CutPrefix(l, "expr:")
		if !ok {
			continue
		}
		if e = strings.TrimSpace(e); e != "|" {
			exprs = append(exprs, e)
			continue
		}
		indent := -1
		var body []string
		for i+1 < len(lines) {
			next := lines[i+1]
			ni := len(next) - len(strings.TrimLeft(next, " "))
			if strings.TrimSpace(next) == "" || (indent >= 0 && ni < indent) || (indent < 0 && ni <= len(lines[i])-len(strings.TrimLeft(lines[i], " "))) {
				break
			}
			if indent < 0 {
				indent = ni
			}
			body = append(body, next[indent:])
			i++
		}
		exprs = append(exprs, strings.Join(body, "\n"))
	}
	if len(names) == 0 || len(names) != len(exprs) {
		t.Fatalf("%s: %d alerts, %d expressions; want as many, at least one", rulesFile, len(names), len(exprs))
	}
	return names, exprs
}

var metricName = regexp.MustCompile(`\bdistcache_[a-z0-9_]+\b`)

// metricNames lists the distcache metrics the expressions read, sorted (a histogram's as its
// _bucket, _sum or _count series, the way expressions name them).
func metricNames(exprs []string) []string {
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			seen[m] = true
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// seriesNames returns the names of the series in http://addr/metrics.
func seriesNames(ctx context.Context, addr string) (map[string]bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	out := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		if i := strings.IndexAny(l, "{ "); i > 0 {
			out[l[:i]] = true
		}
	}
	return out, sc.Err()
}

// startEdge builds and starts examples/edge-service on the pipeline's Redis, with a small local
// cache so that reads of every item evict by max_items; it returns its address.
func startEdge(ctx context.Context, t *testing.T, root, dir, redisAddr string) string {
	t.Helper()
	bin, err := pipeline.BuildProgram(ctx, root, "examples", "./edge-service", filepath.Join(dir, "bin"), "edge-service")
	if err != nil {
		t.Fatal(err)
	}
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	edge := pipeline.NewProgram(devstack.ProgramConfig{
		Name: "edge-service", Dir: filepath.Join(dir, "services"), Args: []string{bin},
		Env: []string{"EDGE_REDIS_ADDR=" + redisAddr, "EDGE_PROJECTIONS=" + pipeline.Projection.Name,
			"EDGE_HTTP_ADDR=" + addr, "EDGE_MAX_ITEMS=50"},
		Ready: pipeline.HTTPReady("http://" + addr + "/healthz"),
	}, addr)
	if err := edge.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = edge.Stop() })
	return addr
}

// startPrometheus runs Prometheus on a free port with its own data directory, scraping targets
// (job name → host:port) every second and evaluating rules every second; it returns its URL.
func startPrometheus(ctx context.Context, t *testing.T, bin, rules string, targets map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nrule_files:\n  - %q\nscrape_configs:\n", rules)
	jobs := make([]string, 0, len(targets))
	for j := range targets {
		jobs = append(jobs, j)
	}
	slices.Sort(jobs)
	for _, j := range jobs {
		fmt.Fprintf(&cfg, "  - job_name: %q\n    static_configs:\n      - targets: [%q]\n", j, targets[j])
	}
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	prom := pipeline.NewProgram(devstack.ProgramConfig{
		Name: "prometheus", Dir: dir,
		Args: []string{bin, "--config.file=" + conf, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=127.0.0.1:" + strconv.Itoa(port), "--log.level=warn"},
		Ready: pipeline.HTTPReady(base + "/-/ready"),
	}, "")
	if err := prom.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prom.Stop() })
	return base
}

// traffic updates a few items every 100 ms and reads every item (and absent keys) through the
// edge's HTTP API until the returned stop is called.
func traffic(ctx context.Context, t *testing.T, pool *pgxpool.Pool, edge string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := int64(0); ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_, _ = pipeline.Bump(ctx, pool, []int64{1 + i%200, 1 + (i+100)%200})
		}
	}()
	go func() {
		defer wg.Done()
		c := &http.Client{Timeout: 2 * time.Second}
		for i := 0; ctx.Err() == nil; i++ {
			key := pipeline.Key(1 + i%200)
			if i%10 == 0 {
				key = "absent-" + strconv.Itoa(i) // a miss remembered as absent
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, edge+"/v1/"+pipeline.Projection.Name+"/"+url.PathEscape(key), nil)
			if err != nil {
				return
			}
			if resp, err := c.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if i%50 == 0 {
				select { // paced: leave the two cores to the pipeline
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// writeDeadLetters writes one outbox row the core-publisher dead-letters (a model no table
// captures) and one the cache-producer dead-letters (an item without the key field k).
func writeDeadLetters(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	w, err := events.NewOutboxWriter()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it does nothing
	if err := w.Write(ctx, tx,
		events.Envelope{Aggregate: "no_such_model", Key: "1", Op: events.OpUpsert, Payload: json.RawMessage(`{"id":1}`)},
		events.Envelope{Aggregate: "items", Key: "999999", Op: events.OpUpsert, Payload: json.RawMessage(`{"id":999999,"seq":1}`)},
	); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// promQuery evaluates q at the current time and returns its result vector (or scalar, as one
// element); an error for any status but success.
func promQuery(ctx context.Context, base, q string) ([]json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, r.Error)
	}
	if r.Data.ResultType == "scalar" || r.Data.ResultType == "string" {
		return []json.RawMessage{r.Data.Result}, nil
	}
	var out []json.RawMessage
	if err := json.Unmarshal(r.Data.Result, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// ruleHealth returns the health of every alerting rule Prometheus loaded, by alert name (an
// evaluation error shows as "err: <lastError>").
func ruleHealth(ctx context.Context, base string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/rules?type=alert", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, g := range r.Data.Groups {
		for _, rl := range g.Rules {
			h := rl.Health
			if rl.LastError != "" {
				h = "err: " + rl.LastError
			}
			out[rl.Name] = h
		}
	}
	return out, nil
}

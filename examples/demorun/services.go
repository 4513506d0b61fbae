package demorun

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
)

// Metric names the demo reads from the services' /metrics.
const (
	metricPublisherEvents = "distcache_publisher_events_total"
	metricProducerRecords = "distcache_producer_records_consumed_total"
)

type services struct {
	dir   string
	bins  map[string]string
	progs map[string]*devstack.Program
	mode  devstack.Mode
	cfg   Config
	http  *http.Client
}

var serviceNames = []string{"core-publisher", "cache-producer", "control-plane", "edge-service"}

func startServices(ctx context.Context, cfg Config, say func(string, ...any)) (*services, error) {
	s := &services{
		dir:   filepath.Join(cfg.RunDir, "services"),
		progs: map[string]*devstack.Program{},
		mode:  devstack.Attached,
		cfg:   cfg,
		http:  &http.Client{Timeout: 2 * time.Second},
	}
	if cfg.KeepRunning {
		s.mode = devstack.Detached
	}
	// A previous demo's services: stop them, so this run uses freshly built binaries.
	for _, name := range serviceNames {
		if pid, err := devstack.StopPIDFile(filepath.Join(s.dir, name+".pid"), syscall.SIGTERM, 20*time.Second); err != nil {
			return nil, fmt.Errorf("%s: stop the previous run's process: %w", name, err)
		} else if pid != 0 {
			say("      stopped the previous run's %s (pid %d)", name, pid)
		}
	}
	t0 := time.Now()
	bins, err := buildBinaries(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.bins = bins
	say("      built in %v", time.Since(t0).Round(time.Millisecond))
	st := cfg.Stack
	specs := []struct {
		name   string
		health string
		addr   string
		env    []string
	}{
		{"core-publisher", "http://" + addr(cfg.Ports.Publisher) + "/readyz", addr(cfg.Ports.Publisher), []string{
			"PUBLISHER_DATABASE_URL=" + st.CoreDatabaseURL,
			"PUBLISHER_KAFKA_BROKERS=" + st.KafkaBrokers,
			"PUBLISHER_REPLICATION_FACTOR=1",
			"PUBLISHER_HTTP_ADDR=" + addr(cfg.Ports.Publisher),
		}},
		{"cache-producer", "http://" + addr(cfg.Ports.Producer) + "/healthz", addr(cfg.Ports.Producer), []string{
			"PRODUCER_DATABASE_URL=" + st.ControlDatabaseURL,
			"PRODUCER_REDIS_ADDR=" + st.RedisAddr,
			"PRODUCER_KAFKA_BROKERS=" + st.KafkaBrokers,
			"PRODUCER_TEMPORAL_HOSTPORT=" + st.TemporalHostPort,
			"PRODUCER_HTTP_ADDR=" + addr(cfg.Ports.Producer),
		}},
		{"control-plane", "http://" + addr(cfg.Ports.ControlHTTP) + "/healthz", addr(cfg.Ports.ControlHTTP), []string{
			"CONTROLPLANE_DATABASE_URL=" + st.ControlDatabaseURL,
			"CONTROLPLANE_CORE_DATABASE_URL=" + st.CoreDatabaseURL,
			"CONTROLPLANE_REDIS_ADDR=" + st.RedisAddr,
			"CONTROLPLANE_TEMPORAL_HOSTPORT=" + st.TemporalHostPort,
			"CONTROLPLANE_TEMPORAL_UI_URL=" + st.TemporalUIURL,
			"CONTROLPLANE_GRPC_ADDR=" + addr(cfg.Ports.ControlGRPC),
			"CONTROLPLANE_HTTP_ADDR=" + addr(cfg.Ports.ControlHTTP),
			"CONTROLPLANE_TOKENS=" + cfg.Token,
			"CONTROLPLANE_RETIRE_GRACE=30s",
		}},
	}
	for _, sp := range specs {
		if err := s.start(ctx, sp.name, sp.addr, sp.health, sp.env); err != nil {
			s.stop()
			return nil, err
		}
		say("      %-15s %s  (log %s)", sp.name, sp.addr, filepath.Join(s.dir, sp.name+".log"))
	}
	return s, nil
}

func (s *services) start(ctx context.Context, name, listen, health string, env []string) error {
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	p, err := devstack.StartProgram(sctx, devstack.ProgramConfig{
		Name: name,
		Dir:  s.dir,
		Args: []string{s.bins[name]},
		Env:  env,
		Mode: s.mode,
		Ready: func(ctx context.Context) error {
			return s.ok(ctx, health)
		},
	})
	if err != nil {
		return fmt.Errorf("%s did not become healthy at %s: %w", name, health, err)
	}
	s.progs[name] = p
	return os.WriteFile(filepath.Join(s.dir, name+".addr"), []byte(listen), 0o644)
}

func (s *services) ok(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

func (s *services) startEdge(ctx context.Context, cfg Config) error {
	names := make([]string, len(demoProjections))
	for i, p := range demoProjections {
		names[i] = p.Name
	}
	return s.start(ctx, "edge-service", addr(cfg.Ports.Edge), "http://"+addr(cfg.Ports.Edge)+"/healthz", []string{
		"EDGE_REDIS_ADDR=" + cfg.Stack.RedisAddr,
		"EDGE_REDIS_REPLICAS=" + strings.Join(cfg.Stack.RedisReplicaAddrs, ","),
		"EDGE_PROJECTIONS=" + strings.Join(names, ","),
		"EDGE_HTTP_ADDR=" + addr(cfg.Ports.Edge),
	})
}

// stop stops every service this run started (tests; make demo leaves them running).
func (s *services) stop() {
	for i := len(serviceNames) - 1; i >= 0; i-- {
		if p := s.progs[serviceNames[i]]; p != nil {
			_ = p.Stop(20 * time.Second)
		}
	}
}

// metric sums the samples of a counter or gauge in a Prometheus text exposition.
func (s *services) metric(ctx context.Context, port int, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr(port)+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}

// edgeStats reads the edge service's /stats.
func (s *services) edgeStats(ctx context.Context) (distcache.Stats, error) {
	var st distcache.Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr(s.cfg.Ports.Edge)+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

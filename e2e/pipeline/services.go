package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/distcache/distcache/tools/devstack"
)

// Metric names read from the services' /metrics.
const (
	MetricPublisherEvents = "distcache_publisher_events_total"
	MetricProducerRecords = "distcache_producer_records_consumed_total"
)

// build builds the three services into RunDir/bin.
func (p *Pipeline) build(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, t := range []struct{ name, mod string }{
		{"core-publisher", "services/core-publisher"},
		{"cache-producer", "services/cache-producer"},
		{"control-plane", "services/control-plane"},
	} {
		bin := filepath.Join(p.cfg.RunDir, "bin", t.name)
		var err error
		for range 2 { // a go build racing other builds on a busy machine can fail spuriously
			if err = devstack.GoBuild(ctx, filepath.Join(p.cfg.RepoDir, t.mod), ".", bin, false); err == nil {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", t.name, err)
		}
		out[t.name] = bin
	}
	return out, nil
}

func freeAddr() (string, error) {
	port, err := devstack.FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

func (p *Pipeline) startServices(ctx context.Context, bins map[string]string) error {
	var err error
	if p.PublisherAddr, err = freeAddr(); err != nil {
		return err
	}
	if p.ProducerAddr, err = freeAddr(); err != nil {
		return err
	}
	if p.ControlHTTP, err = freeAddr(); err != nil {
		return err
	}
	grpcAddr, err := freeAddr()
	if err != nil {
		return err
	}
	dir := filepath.Join(p.cfg.RunDir, "services")
	mk := func(name, health string, env []string) *Program {
		return &Program{name: name, cfg: devstack.ProgramConfig{
			Name: name, Dir: dir, Args: []string{bins[name]}, Env: env, Mode: devstack.Attached,
			Ready: func(ctx context.Context) error { return httpOK(ctx, health) },
		}}
	}
	p.Publisher = mk("core-publisher", "http://"+p.PublisherAddr+"/readyz", append([]string{
		"PUBLISHER_DATABASE_URL=" + p.CoreURL,
		"PUBLISHER_KAFKA_BROKERS=" + p.Kafka.Addr,
		"PUBLISHER_REPLICATION_FACTOR=1",
		"PUBLISHER_HTTP_ADDR=" + p.PublisherAddr,
	}, p.cfg.PublisherEnv...))
	p.Producer = mk("cache-producer", "http://"+p.ProducerAddr+"/healthz", append([]string{
		"PRODUCER_DATABASE_URL=" + p.ControlURL,
		"PRODUCER_REDIS_ADDR=" + p.RedisAddr,
		"PRODUCER_KAFKA_BROKERS=" + p.Kafka.Addr,
		"PRODUCER_TEMPORAL_HOSTPORT=" + p.Temporal.HostPort,
		"PRODUCER_HTTP_ADDR=" + p.ProducerAddr,
	}, p.cfg.ProducerEnv...))
	p.Control = mk("control-plane", "http://"+p.ControlHTTP+"/healthz", []string{
		"CONTROLPLANE_DATABASE_URL=" + p.ControlURL,
		"CONTROLPLANE_CORE_DATABASE_URL=" + p.CoreURL,
		"CONTROLPLANE_REDIS_ADDR=" + p.RedisAddr,
		"CONTROLPLANE_TEMPORAL_HOSTPORT=" + p.Temporal.HostPort,
		"CONTROLPLANE_GRPC_ADDR=" + grpcAddr,
		"CONTROLPLANE_HTTP_ADDR=" + p.ControlHTTP,
		"CONTROLPLANE_TOKENS=" + p.cfg.Token,
		"CONTROLPLANE_RETIRE_GRACE=30s",
	})
	for _, s := range []*Program{p.Publisher, p.Producer, p.Control} {
		if err := s.Start(ctx); err != nil {
			return err
		}
	}
	p.say("  services up: core-publisher %s, cache-producer %s, control-plane %s (logs in %s)", p.PublisherAddr, p.ProducerAddr, p.ControlHTTP, dir)
	return nil
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// Metric sums the samples of a counter or gauge named name in the Prometheus text exposition at
// http://addr/metrics.
func Metric(ctx context.Context, addr, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}

// LogTails returns the tail of each service's log, for failure reports.
func (p *Pipeline) LogTails() string {
	var b strings.Builder
	for _, s := range []*Program{p.Publisher, p.Producer, p.Control} {
		if s != nil {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", s.name, s.LogTail())
		}
	}
	return b.String()
}

// ServiceLogDir is where the services' logs are.
func (p *Pipeline) ServiceLogDir() string { return filepath.Join(p.cfg.RunDir, "services") }

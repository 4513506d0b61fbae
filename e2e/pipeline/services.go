package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/distcache/distcache/tools/devstack"
)

// Metric names read from the services' /metrics.
const (
	MetricPublisherEvents = "distcache_publisher_events_total"
	MetricProducerRecords = "distcache_producer_records_consumed_total"
)

// The services' program names: their binaries in RunDir/bin, their logs, PID files and address
// files in RunDir/services (`make status` and `make down` read the last two).
const (
	NamePublisher = "core-publisher"
	NameProducer  = "cache-producer"
	NameControl   = "control-plane"
)

// Stack says where the infrastructure the services use runs: a stack Start brought up, or the
// local stack of `make up` (its .run/stack.env).
type Stack struct {
	CoreURL           string   // the core database: outbox, capture triggers, the sample tables
	ControlURL        string   // the control-plane's registry
	RedisAddr         string   // the primary
	RedisReplicaAddrs []string // read replicas, for edges; may be empty
	KafkaBrokers      string
	TemporalHostPort  string
	TemporalUIURL     string // links printed by the control-plane; empty when headless
}

// Ports are the services' listen ports; 0 picks a free one.
type Ports struct {
	Publisher, Producer, ControlGRPC, ControlHTTP int
}

// ServicesConfig is how StartServices runs the three services.
type ServicesConfig struct {
	RunDir string // logs, PID and address files go to RunDir/services
	Stack  Stack
	Ports  Ports
	Token  string // the API bearer token of the control-plane and the core-publisher; required
	// Mode Attached (the zero value) ties the services to this process, which is what tests and
	// the chaos and bench programs want. Detached lets them outlive it (make demo); a previous
	// detached run's services, found through their PID files, are stopped first.
	Mode devstack.Mode
	// PublisherEnv, ProducerEnv and ControlEnv are extra KEY=VALUE settings for the services.
	PublisherEnv, ProducerEnv, ControlEnv []string
	// ProducerReplicas is how many cache-producer replicas run (they share the topics through
	// their consumer group); 0 means 1.
	ProducerReplicas int
	// Say receives progress lines; nil discards them.
	Say func(format string, args ...any)
}

// Services are the three running services.
type Services struct {
	Publisher, Producer, Control *Program
	PublisherAddr, ProducerAddr  string // HTTP: health and metrics
	ControlGRPC, ControlHTTP     string
	// Producers are every cache-producer replica (Producer is the first), ProducerAddrs their
	// HTTP addresses.
	Producers     []*Program
	ProducerAddrs []string
	dir           string
}

// Binaries are built programs' paths, by program name.
type Binaries map[string]string

// BuildProgram builds package pkg of the module in RepoDir/mod into binDir/name and returns the
// binary's path.
func BuildProgram(ctx context.Context, repoDir, mod, pkg, binDir, name string) (string, error) {
	if _, err := os.Stat(filepath.Join(repoDir, mod, "go.mod")); err != nil {
		return "", fmt.Errorf("build %s: module %s missing from this checkout: %w", name, mod, err)
	}
	bin := filepath.Join(binDir, name)
	var err error
	for range 2 { // a go build racing other builds on a busy machine can fail spuriously
		if err = devstack.GoBuild(ctx, filepath.Join(repoDir, mod), pkg, bin, false); err == nil {
			return bin, nil
		}
	}
	return "", fmt.Errorf("build %s: %w", name, err)
}

// BuildServices builds the three services from the checkout at repoDir into binDir.
func BuildServices(ctx context.Context, repoDir, binDir string) (Binaries, error) {
	out := Binaries{}
	for _, t := range []struct{ name, mod string }{
		{NamePublisher, "services/core-publisher"},
		{NameProducer, "services/cache-producer"},
		{NameControl, "services/control-plane"},
	} {
		bin, err := BuildProgram(ctx, repoDir, t.mod, ".", binDir, t.name)
		if err != nil {
			return nil, err
		}
		out[t.name] = bin
	}
	return out, nil
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// listenAddr returns 127.0.0.1:port, or a free port's address when port is 0.
func listenAddr(port int) (string, error) {
	if port != 0 {
		return hostPort(port), nil
	}
	port, err := devstack.FreePort()
	if err != nil {
		return "", err
	}
	return hostPort(port), nil
}

// StartServices starts core-publisher, cache-producer and control-plane from bins (BuildServices)
// and waits until each one is healthy. On an error it stops those it started.
func StartServices(ctx context.Context, cfg ServicesConfig, bins Binaries) (_ *Services, err error) {
	if cfg.Token == "" {
		return nil, fmt.Errorf("%w: an API token (control-plane, core-publisher) is required", ErrConfig)
	}
	say := cfg.Say
	if say == nil {
		say = func(string, ...any) {}
	}
	s := &Services{dir: filepath.Join(cfg.RunDir, "services")}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if cfg.Mode == devstack.Detached {
		for _, name := range []string{NamePublisher, NameProducer, NameControl} {
			pid, err := devstack.StopPIDFile(filepath.Join(s.dir, name+".pid"), syscall.SIGTERM, 20*time.Second)
			if err != nil {
				return nil, fmt.Errorf("stop the previous run's %s: %w", name, err)
			}
			if pid != 0 {
				say("stopped the previous run's %s (pid %d)", name, pid)
			}
		}
	}
	if s.PublisherAddr, err = listenAddr(cfg.Ports.Publisher); err != nil {
		return nil, err
	}
	replicas := max(cfg.ProducerReplicas, 1)
	for i := range replicas {
		port := 0
		if i == 0 {
			port = cfg.Ports.Producer
		}
		addr, err := listenAddr(port)
		if err != nil {
			return nil, err
		}
		s.ProducerAddrs = append(s.ProducerAddrs, addr)
	}
	s.ProducerAddr = s.ProducerAddrs[0]
	if s.ControlGRPC, err = listenAddr(cfg.Ports.ControlGRPC); err != nil {
		return nil, err
	}
	if s.ControlHTTP, err = listenAddr(cfg.Ports.ControlHTTP); err != nil {
		return nil, err
	}
	mk := func(name, addr, health string, env []string) *Program {
		bin := bins[name]
		if strings.HasPrefix(name, NameProducer) {
			bin = bins[NameProducer] // every replica runs the one binary
		}
		return NewProgram(devstack.ProgramConfig{
			Name: name, Dir: s.dir, Args: []string{bin}, Env: env, Mode: cfg.Mode,
			Ready: HTTPReady("http://" + addr + health),
		}, addr)
	}
	st := cfg.Stack
	s.Publisher = mk(NamePublisher, s.PublisherAddr, "/readyz", append([]string{
		"PUBLISHER_DATABASE_URL=" + st.CoreURL,
		"PUBLISHER_KAFKA_BROKERS=" + st.KafkaBrokers,
		"PUBLISHER_REPLICATION_FACTOR=1",
		"PUBLISHER_HTTP_ADDR=" + s.PublisherAddr,
		"PUBLISHER_TOKENS=" + cfg.Token,
	}, cfg.PublisherEnv...))
	for i, addr := range s.ProducerAddrs {
		name := NameProducer // the first keeps the plain name: `make status` reads cache-producer.addr
		if i > 0 {
			name = fmt.Sprintf("%s-%d", NameProducer, i+1)
		}
		s.Producers = append(s.Producers, mk(name, addr, "/healthz", append([]string{
			"PRODUCER_DATABASE_URL=" + st.ControlURL,
			"PRODUCER_REDIS_ADDRS=" + st.RedisAddr,
			"PRODUCER_KAFKA_BROKERS=" + st.KafkaBrokers,
			"PRODUCER_TEMPORAL_HOSTPORT=" + st.TemporalHostPort,
			"PRODUCER_HTTP_ADDR=" + addr,
			"PRODUCER_REPLICA_NAME=" + name,
		}, cfg.ProducerEnv...)))
	}
	s.Producer = s.Producers[0]
	control := []string{
		"CONTROLPLANE_DATABASE_URL=" + st.ControlURL,
		"CONTROLPLANE_CORE_DATABASE_URL=" + st.CoreURL,
		"CONTROLPLANE_REDIS_ADDRS=" + st.RedisAddr,
		"CONTROLPLANE_TEMPORAL_HOSTPORT=" + st.TemporalHostPort,
		"CONTROLPLANE_GRPC_ADDR=" + s.ControlGRPC,
		"CONTROLPLANE_HTTP_ADDR=" + s.ControlHTTP,
		"CONTROLPLANE_TOKENS=" + cfg.Token,
		"CONTROLPLANE_RETIRE_GRACE=30s",
	}
	if st.TemporalUIURL != "" {
		control = append(control, "CONTROLPLANE_TEMPORAL_UI_URL="+st.TemporalUIURL)
	}
	s.Control = mk(NameControl, s.ControlHTTP, "/healthz", append(control, cfg.ControlEnv...))
	for _, p := range s.all() {
		if err := p.Start(ctx); err != nil {
			return nil, err
		}
		say("%-15s %s  (log %s)", p.Name(), p.addr, filepath.Join(s.dir, p.Name()+".log"))
	}
	return s, nil
}

// all lists the services in their start order.
func (s *Services) all() []*Program {
	return append(append([]*Program{s.Publisher}, s.Producers...), s.Control)
}

// Stop stops the services gracefully, in the reverse order of their start.
func (s *Services) Stop() {
	ps := s.all()
	for i := len(ps) - 1; i >= 0; i-- {
		if ps[i] != nil {
			_ = ps[i].Stop()
		}
	}
}

// LogTails returns the tail of each service's log, for failure reports.
func (s *Services) LogTails() string {
	var b strings.Builder
	for _, p := range s.all() {
		if p != nil {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", p.name, p.LogTail())
		}
	}
	return b.String()
}

// ServiceLogDir is where the services' logs are.
func (s *Services) ServiceLogDir() string { return s.dir }

var httpClient = &http.Client{Timeout: 2 * time.Second}

// HTTPReady returns a readiness check that passes when url answers 200.
func HTTPReady(url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
		}
		return nil
	}
}

// Metric sums the samples of a counter or gauge named name in the Prometheus text exposition at
// http://addr/metrics. A metric the exposition lacks sums to 0: a labelled metric has no samples
// until something is counted.
func Metric(ctx context.Context, addr, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("read metrics at %s: HTTP %d", addr, resp.StatusCode)
	}
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
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	return sum, nil
}

// getBody returns the body of a GET of url (any status).
func getBody(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

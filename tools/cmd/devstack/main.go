// Command devstack runs distcache's embedded local stack: PostgreSQL, a Redis primary and replica,
// a Kafka-protocol broker (kafkad) and Temporal's dev server with its Web UI, each on the
// project's own loopback ports under a run directory (default .run), with logs and PID files.
//
//	devstack up       start what is not running yet (idempotent), wait until healthy
//	devstack status   print each component with its address, pid and health (a service's
//	                  readiness, and the generations the cache-producer is rebuilding)
//	devstack down     stop what the stack started (only processes named in its PID files)
//	devstack env      print the stack's connection settings as shell variables
//	devstack install  install PostgreSQL, Redis and Prometheus (whose server and promtool the
//	                  dashboard and alert tests run) when missing (apt-get, as root on Debian)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/distcache/distcache/tools/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		os.Exit(1)
	}
}

// ports are the stack's fixed loopback ports (docs/architecture.md, "The local stack").
type ports struct {
	postgres, redisPrimary, redisReplica, kafka, temporal, temporalUI int
	sentinels                                                         [3]int
}

var defaultPorts = ports{postgres: 55432, redisPrimary: 56379, redisReplica: 56380, kafka: 59092, temporal: 57233, temporalUI: 58233,
	sentinels: [3]int{56381, 56382, 56383}}

// sentinelMaster is the master set name the local stack's sentinels monitor.
const sentinelMaster = "distcache"

// databases are created by `up` when missing: the sample core service's and the control-plane's.
var databases = []string{"core", "controlplane"}

type stack struct {
	dir   string
	ports ports
	out   io.Writer
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	dir := fs.String("dir", ".run", "run directory for data, logs and PID files")
	offset := fs.Int("port-offset", 0, "added to every default port (to run a second stack beside the first)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: devstack [-dir .run] [-port-offset N] up|down|status|env|install|install-chromium")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want exactly one command: up, down, status, env, install or install-chromium")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	p := defaultPorts
	for _, port := range []*int{&p.postgres, &p.redisPrimary, &p.redisReplica, &p.kafka, &p.temporal, &p.temporalUI,
		&p.sentinels[0], &p.sentinels[1], &p.sentinels[2]} {
		*port += *offset
	}
	s := &stack{dir: abs, ports: p, out: out}
	switch fs.Arg(0) {
	case "up":
		return s.up(ctx)
	case "down":
		return s.down()
	case "status":
		return s.status(ctx)
	case "env":
		return s.printEnv()
	case "install":
		if err := devstack.EnsureInstalled(ctx); err != nil {
			return err
		}
		_, err := devstack.EnsurePrometheus(ctx)
		return err
	case "install-chromium":
		// The headless browser of `make screenshot` (not needed by the stack itself).
		path, err := devstack.EnsureChromium(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "chromium:", path)
		return nil
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", fs.Arg(0))
	}
}

func (s *stack) path(parts ...string) string {
	return filepath.Join(append([]string{s.dir}, parts...)...)
}

func (s *stack) addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

func (s *stack) pgURL(db string) string {
	return fmt.Sprintf("postgres://postgres:%s@%s/%s?sslmode=disable", devstack.DefaultPostgresPassword, s.addr(s.ports.postgres), db)
}

func (s *stack) up(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := devstack.EnsureInstalled(ctx); err != nil {
		return err
	}
	for _, bin := range []string{"kafkad", "temporal"} {
		if _, err := os.Stat(s.path("bin", bin)); err != nil {
			return fmt.Errorf("%s is not built at %s: run `make tools`", bin, s.path("bin", bin))
		}
	}
	step := func(name, addr string, start func() error) error {
		t0 := time.Now()
		if err := start(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(s.out, "  %-14s %-24s up (%v)\n", name, addr, time.Since(t0).Round(time.Millisecond))
		return nil
	}
	fmt.Fprintf(s.out, "devstack: starting the local stack in %s\n", s.dir)
	var pg *devstack.Postgres
	if err := step("postgres", s.addr(s.ports.postgres), func() (err error) {
		pg, err = devstack.StartPostgres(ctx, devstack.PostgresConfig{Dir: s.path("postgres"), Port: s.ports.postgres, Mode: devstack.Detached})
		if err != nil {
			return err
		}
		for _, db := range databases {
			if err := devstack.ProbePostgres(ctx, pg.URL(db)); err == nil {
				continue
			}
			if err := pg.CreateDatabase(ctx, db); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := step("redis-primary", s.addr(s.ports.redisPrimary), func() error {
		_, err := devstack.StartRedis(ctx, devstack.RedisConfig{Name: "redis-primary", Dir: s.path("redis-primary"), Port: s.ports.redisPrimary, Persist: true, Mode: devstack.Detached})
		return err
	}); err != nil {
		return err
	}
	if err := step("redis-replica", s.addr(s.ports.redisReplica), func() error {
		_, err := devstack.StartRedis(ctx, devstack.RedisConfig{Name: "redis-replica", Dir: s.path("redis-replica"), Port: s.ports.redisReplica, ReplicaOf: s.addr(s.ports.redisPrimary), Persist: true, Mode: devstack.Detached})
		return err
	}); err != nil {
		return err
	}
	for i, port := range s.ports.sentinels {
		name := fmt.Sprintf("sentinel-%d", i+1)
		if err := step(name, s.addr(port), func() error {
			_, err := devstack.StartSentinel(ctx, devstack.SentinelConfig{Name: name, Dir: s.path(name), Port: port,
				Master: sentinelMaster, Primary: s.addr(s.ports.redisPrimary), Quorum: 2, Mode: devstack.Detached})
			return err
		}); err != nil {
			return err
		}
	}
	if err := step("kafka", s.addr(s.ports.kafka), func() error {
		_, err := devstack.StartKafka(ctx, devstack.KafkaConfig{Bin: s.path("bin", "kafkad"), Dir: s.path("kafka"), Port: s.ports.kafka, Mode: devstack.Detached})
		return err
	}); err != nil {
		return err
	}
	if err := step("temporal", s.addr(s.ports.temporal), func() error {
		_, err := devstack.StartTemporal(ctx, devstack.TemporalConfig{Bin: s.path("bin", "temporal"), Dir: s.path("temporal"),
			Port: s.ports.temporal, UIPort: s.ports.temporalUI, Mode: devstack.Detached, SearchAttributes: devstack.SearchAttributes})
		return err
	}); err != nil {
		return err
	}
	if err := os.WriteFile(s.path("stack.env"), []byte(s.env()), 0o644); err != nil {
		return fmt.Errorf("write stack.env: %w", err)
	}
	fmt.Fprintf(s.out, "devstack: up. Temporal UI: http://%s  settings: %s  stop: make down\n", s.addr(s.ports.temporalUI), s.path("stack.env"))
	return nil
}

func (s *stack) env() string {
	return fmt.Sprintf(`DISTCACHE_CORE_DATABASE_URL=%s
DISTCACHE_CONTROL_DATABASE_URL=%s
DISTCACHE_REDIS_ADDR=%s
DISTCACHE_REDIS_REPLICA_ADDRS=%s
DISTCACHE_REDIS_SENTINEL_MASTER=%s
DISTCACHE_REDIS_SENTINEL_ADDRS=%s
DISTCACHE_KAFKA_BROKERS=%s
DISTCACHE_TEMPORAL_HOSTPORT=%s
DISTCACHE_TEMPORAL_UI_URL=http://%s
`, s.pgURL("core"), s.pgURL("controlplane"), s.addr(s.ports.redisPrimary), s.addr(s.ports.redisReplica),
		sentinelMaster, s.sentinelAddrs(), s.addr(s.ports.kafka), s.addr(s.ports.temporal), s.addr(s.ports.temporalUI))
}

func (s *stack) sentinelAddrs() string {
	var a []string
	for _, p := range s.ports.sentinels {
		a = append(a, s.addr(p))
	}
	return strings.Join(a, ",")
}

func (s *stack) printEnv() error {
	_, err := io.WriteString(s.out, s.env())
	return err
}

// component is one entry of `status` and `down`.
type component struct {
	name    string
	pidFile string
	addr    string
	stopSig syscall.Signal
	probe   func(ctx context.Context) error
}

func (s *stack) components() []component {
	return []component{
		{"postgres", s.path("postgres", "postgres.pid"), s.addr(s.ports.postgres), syscall.SIGINT,
			func(ctx context.Context) error { return devstack.ProbePostgres(ctx, s.pgURL("postgres")) }},
		{"redis-primary", s.path("redis-primary", "redis-primary.pid"), s.addr(s.ports.redisPrimary), syscall.SIGTERM,
			func(ctx context.Context) error {
				return devstack.ProbeRedis(ctx, s.addr(s.ports.redisPrimary), "", false)
			}},
		{"redis-replica", s.path("redis-replica", "redis-replica.pid"), s.addr(s.ports.redisReplica), syscall.SIGTERM,
			func(ctx context.Context) error {
				return devstack.ProbeRedis(ctx, s.addr(s.ports.redisReplica), "", true)
			}},
		s.sentinel(0), s.sentinel(1), s.sentinel(2),
		{"kafka", s.path("kafka", "kafka.pid"), s.addr(s.ports.kafka), syscall.SIGTERM,
			func(ctx context.Context) error { return devstack.ProbeKafka(ctx, s.addr(s.ports.kafka)) }},
		{"temporal", s.path("temporal", "temporal.pid"), s.addr(s.ports.temporal), syscall.SIGTERM,
			func(ctx context.Context) error {
				return devstack.ProbeTemporal(ctx, s.addr(s.ports.temporal), "default")
			}},
	}
}

func (s *stack) sentinel(i int) component {
	name := fmt.Sprintf("sentinel-%d", i+1)
	addr := s.addr(s.ports.sentinels[i])
	return component{name, s.path(name, name+".pid"), addr, syscall.SIGTERM,
		func(ctx context.Context) error { return devstack.ProbeSentinel(ctx, addr, sentinelMaster, 0) }}
}

func (s *stack) status(ctx context.Context) error {
	tw := tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tADDRESS\tPID\tHEALTH")
	for _, c := range s.services() {
		pid := devstack.RunningPID(c.pidFile)
		if pid == 0 {
			continue
		}
		rep := reportService(ctx, c.addr)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", c.name, c.addr, pid, rep.health)
		for _, r := range rep.rebuilds {
			fmt.Fprintf(tw, "\t\t\t%s\n", r)
		}
	}
	for _, c := range s.components() {
		pid := devstack.RunningPID(c.pidFile)
		health := "stopped"
		if pid != 0 {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			if err := c.probe(cctx); err != nil {
				health = "unhealthy: " + err.Error()
			} else {
				health = "healthy"
			}
			cancel()
		}
		pidStr := "-"
		if pid != 0 {
			pidStr = fmt.Sprint(pid)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.name, c.addr, pidStr, health)
	}
	fmt.Fprintf(tw, "temporal-ui\thttp://%s\t-\t%s\n", s.addr(s.ports.temporalUI), "served by temporal")
	return tw.Flush()
}

// services are the processes `make demo` starts under .run/services (pid files named <svc>.pid).
func (s *stack) services() []component {
	matches, _ := filepath.Glob(s.path("services", "*.pid"))
	var out []component
	for _, m := range matches {
		name := filepath.Base(m)
		name = name[:len(name)-len(".pid")]
		addr := ""
		if b, err := os.ReadFile(s.path("services", name+".addr")); err == nil {
			addr = string(b)
		}
		out = append(out, component{name: name, pidFile: m, addr: addr, stopSig: syscall.SIGTERM})
	}
	return out
}

func (s *stack) down() error {
	all := append(s.services(), reverse(s.components())...)
	var errs []error
	stopped := 0
	for _, c := range all {
		pid, err := devstack.StopPIDFile(c.pidFile, c.stopSig, 30*time.Second)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
			continue
		}
		if pid != 0 {
			stopped++
			fmt.Fprintf(s.out, "  %-14s stopped (pid %d)\n", c.name, pid)
		}
	}
	fmt.Fprintf(s.out, "devstack: %d processes stopped; data kept in %s (remove it for a fresh stack)\n", stopped, s.dir)
	return errors.Join(errs...)
}

func reverse(cs []component) []component {
	out := make([]component, len(cs))
	for i, c := range cs {
		out[len(cs)-1-i] = c
	}
	return out
}

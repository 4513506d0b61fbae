package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstack"
)

// Config is one demo run.
type Config struct {
	// Stack is the running local stack: the core database holds the sample schema (users, orgs).
	Stack   pipeline.Stack
	RepoDir string // the repository root (holds go.work)
	RunDir  string // where binaries, logs and PID files go (services under RunDir/services)
	Ports   Ports
	Users   int           // users to seed when the schema is empty
	Orgs    int           // orgs to seed when the schema is empty
	Rate    int           // updates per second driven into the core database
	Period  time.Duration // how long to drive updates
	Token   string        // the control-plane bearer token the demo configures and uses
	// KeepRunning leaves the services running after Run returns (make demo); otherwise Run
	// stops them (tests).
	KeepRunning bool
	Out         io.Writer
}

// Ports are the services' and the edge service's listen ports.
type Ports struct {
	pipeline.Ports
	Edge int
}

// DefaultPorts are the local stack's (docs/architecture.md).
var DefaultPorts = Ports{
	Ports: pipeline.Ports{Publisher: 58081, Producer: 58082, ControlGRPC: 58090, ControlHTTP: 58091},
	Edge:  58095,
}

// edgeName is the example edge service's program name (its binary, log, PID and address files).
const edgeName = "edge-service"

// Summary is what a run measured.
type Summary struct {
	Users           int
	Seeded          bool
	Updates         int64         // committed updates driven into the core database
	PublisherEvents float64       // events the publisher relayed during the run
	ProducerEvents  float64       // records the cache-producer applied during the run
	EdgeChanges     uint64        // change-stream entries the edge received during the run
	EdgeUpdates     uint64        // of which applied in place to keys it held
	Samples         int           // updates whose edge visibility was timed
	Unseen          int           // sampled updates the edge had not shown by the end
	P50, P99, Max   time.Duration // commit → edge-visible
	HitRatio        float64       // edge local hits / reads
	Generations     map[string]int64
	TemporalUIURL   string
}

// Projections registered by the demo.
var demoProjections = []pipeline.ProjectionDef{
	{Name: "users_by_email", Model: "users", KeyTemplate: "{email}", LowercaseKey: true, Fields: []string{"id", "email", "name", "org_id", "status", "updated_at"}},
	{Name: "org_by_slug", Model: "orgs", KeyTemplate: "{slug}", Fields: []string{"id", "slug", "name", "plan"}},
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Run runs the demo and returns its summary.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	var sum Summary
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	if cfg.Token == "" {
		return sum, errors.New("demo: a control-plane token is required")
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	say("[1/5] migrations and the sample core schema")
	// As `make migrate` does: the core set on the core database, the control set on the
	// registry's. The services only check them.
	for _, db := range []struct {
		url string
		set migrations.Set
	}{{cfg.Stack.CoreURL, migrations.Core}, {cfg.Stack.ControlURL, migrations.Control}} {
		if err := migrations.Up(ctx, db.url, db.set); err != nil {
			return sum, fmt.Errorf("PostgreSQL migrations: %w", err)
		}
	}
	pool, err := pgxpool.New(ctx, cfg.Stack.CoreURL)
	if err != nil {
		return sum, fmt.Errorf("PostgreSQL (core database): %w", err)
	}
	defer pool.Close()
	t0 := time.Now()
	users, seeded, err := prepareCore(ctx, pool, cfg.Users, cfg.Orgs)
	if err != nil {
		return sum, err
	}
	sum.Users, sum.Seeded = users, seeded
	if seeded {
		say("      seeded %d users and %d orgs in %v", users, cfg.Orgs, time.Since(t0).Round(time.Millisecond))
	} else {
		say("      %d users already present (stack reused)", users)
	}

	say("[2/5] building and starting core-publisher, cache-producer and control-plane")
	mode := devstack.Attached
	if cfg.KeepRunning {
		mode = devstack.Detached
	}
	indent := func(f string, a ...any) { say("      "+f, a...) }
	// A previous demo's edge service: stop it, so this run's answers on its port
	// (StartServices does the same for the three services).
	if mode == devstack.Detached {
		pidFile := filepath.Join(cfg.RunDir, "services", edgeName+".pid")
		if pid, err := devstack.StopPIDFile(pidFile, syscall.SIGTERM, 20*time.Second); err != nil {
			return sum, fmt.Errorf("stop the previous run's %s: %w", edgeName, err)
		} else if pid != 0 {
			indent("stopped the previous run's %s (pid %d)", edgeName, pid)
		}
	}
	t0 = time.Now()
	binDir := filepath.Join(cfg.RunDir, "bin")
	bins, err := pipeline.BuildServices(ctx, cfg.RepoDir, binDir)
	if err != nil {
		return sum, err
	}
	edgeBin, err := pipeline.BuildProgram(ctx, cfg.RepoDir, "examples", "./edge-service", binDir, edgeName)
	if err != nil {
		return sum, err
	}
	indent("built in %v", time.Since(t0).Round(time.Millisecond))
	svcs, err := pipeline.StartServices(ctx, pipeline.ServicesConfig{
		RunDir: cfg.RunDir, Stack: cfg.Stack, Ports: cfg.Ports.Ports,
		Token: cfg.Token, Mode: mode, Say: indent,
	}, bins)
	if err != nil {
		return sum, err
	}
	if !cfg.KeepRunning {
		defer svcs.Stop()
	}

	if err := waitBackload(ctx, svcs.PublisherAddr, seeded, users+cfg.Orgs, say); err != nil {
		return sum, err
	}

	say("[3/5] registering projections through the REST API (%s)", "http://"+svcs.ControlHTTP)
	api := pipeline.NewAPI("http://"+svcs.ControlHTTP, cfg.Token)
	for _, p := range demoProjections {
		created, err := api.EnsureProjection(ctx, p)
		if err != nil {
			return sum, fmt.Errorf("control-plane: register %s: %w", p.Name, err)
		}
		if created {
			say("      %s: registered (key %s, fields %v)", p.Name, p.KeyTemplate, p.Fields)
		} else {
			say("      %s: already registered", p.Name)
		}
	}
	names := make([]string, len(demoProjections))
	for i, p := range demoProjections {
		names[i] = p.Name
	}
	gens, err := api.WaitLive(ctx, names, 5*time.Minute, indent)
	if err != nil {
		return sum, fmt.Errorf("control-plane: %w (see the Temporal UI at %s)", err, cfg.Stack.TemporalUIURL)
	}
	sum.Generations = gens

	edgeAddr := addr(cfg.Ports.Edge)
	say("[4/5] starting the example edge service (examples/edge-service) on %s", edgeAddr)
	edge := pipeline.NewProgram(devstack.ProgramConfig{
		Name: edgeName, Dir: svcs.ServiceLogDir(), Args: []string{edgeBin}, Mode: mode,
		Env: []string{
			"EDGE_REDIS_ADDR=" + cfg.Stack.RedisAddr,
			"EDGE_REDIS_REPLICAS=" + strings.Join(cfg.Stack.RedisReplicaAddrs, ","),
			"EDGE_PROJECTIONS=" + strings.Join(names, ","),
			"EDGE_HTTP_ADDR=" + edgeAddr,
		},
		Ready: pipeline.HTTPReady("http://" + edgeAddr + "/healthz"),
	}, edgeAddr)
	if err := edge.Start(ctx); err != nil {
		return sum, err
	}
	if !cfg.KeepRunning {
		defer func() { _ = edge.Stop() }()
	}

	say("[5/5] driving %d updates/s into the core database for %v", cfg.Rate, cfg.Period)
	d := newDriver(cfg, pool, users, svcs)
	if err := d.run(ctx, out); err != nil {
		return sum, err
	}
	d.fill(&sum)
	sum.TemporalUIURL = cfg.Stack.TemporalUIURL
	return sum, nil
}

// PrintSummary writes the summary as the demo's closing lines.
func PrintSummary(w io.Writer, s Summary) {
	fmt.Fprintf(w, "\nsummary\n")
	fmt.Fprintf(w, "  updates committed in the core DB   %d\n", s.Updates)
	fmt.Fprintf(w, "  events relayed by core-publisher   %.0f\n", s.PublisherEvents)
	fmt.Fprintf(w, "  records applied by cache-producer  %.0f\n", s.ProducerEvents)
	fmt.Fprintf(w, "  changes received at the edge       %d (%d applied in place to held keys)\n", s.EdgeChanges, s.EdgeUpdates)
	fmt.Fprintf(w, "  commit -> edge-visible latency     p50 %s  p99 %s  max %s  (%d samples, %d unseen)\n",
		ms(s.P50), ms(s.P99), ms(s.Max), s.Samples, s.Unseen)
	fmt.Fprintf(w, "  edge hit ratio                     %.1f%%\n", 100*s.HitRatio)
	for _, p := range demoProjections {
		fmt.Fprintf(w, "  generation of %-20s %d\n", p.Name, s.Generations[p.Name])
	}
	fmt.Fprintf(w, "  Temporal UI (backfill workflows)   %s\n", s.TemporalUIURL)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// waitBackload waits until core-publisher (its HTTP at publisher) has backloaded the seeded
// tables into their topics and its outbox is drained, printing its progress, so the backfills
// replay complete topics.
func waitBackload(ctx context.Context, publisher string, seeded bool, rows int, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		running, err1 := pipeline.Metric(ctx, publisher, "distcache_publisher_backload_running")
		done, err2 := pipeline.Metric(ctx, publisher, "distcache_publisher_backload_rows_total")
		lag, err3 := pipeline.Metric(ctx, publisher, "distcache_publisher_lag_seconds")
		if err := errors.Join(err1, err2, err3); err != nil {
			return fmt.Errorf("core-publisher metrics: %w", err)
		}
		if running == 0 && lag == 0 && (!seeded || int(done) >= rows) {
			if seeded {
				say("      core-publisher backloaded %d rows into the compacted topics", int(done))
			}
			return nil
		}
		if seeded {
			say("      core-publisher backload: %d / %d rows", int(done), rows)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("core-publisher: backload not finished in time (%d of %d rows): %w", int(done), rows, ctx.Err())
		case <-tick.C:
		}
	}
}

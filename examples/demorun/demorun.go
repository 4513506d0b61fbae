// Package demorun runs distcache's demo: the whole pipeline on a running local stack. It builds
// and starts the three services and an example edge service, creates and seeds a sample core
// schema, registers two projections through the control-plane's REST API, drives a stream of
// updates in the core database and measures, for each sampled update, how long it takes from
// COMMIT until the edge service answers with the new value.
package demorun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstack"
)

// Stack is where the running local stack is.
type Stack struct {
	CoreDatabaseURL    string // the sample core service's database (outbox + users, orgs)
	ControlDatabaseURL string // the control-plane's registry
	RedisAddr          string // primary
	RedisReplicaAddrs  []string
	KafkaBrokers       string
	TemporalHostPort   string
	TemporalUIURL      string
}

// Config is one demo run.
type Config struct {
	Stack   Stack
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

// Ports are the services' listen ports.
type Ports struct {
	Publisher, Producer, ControlGRPC, ControlHTTP, Edge int
}

// DefaultPorts are the local stack's (docs/architecture.md).
var DefaultPorts = Ports{Publisher: 58081, Producer: 58082, ControlGRPC: 58090, ControlHTTP: 58091, Edge: 58095}

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
var demoProjections = []projectionDef{
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
	for _, u := range []string{cfg.Stack.CoreDatabaseURL, cfg.Stack.ControlDatabaseURL} {
		if err := migrations.Up(ctx, u); err != nil {
			return sum, fmt.Errorf("PostgreSQL migrations: %w", err)
		}
	}
	pool, err := pgxpool.New(ctx, cfg.Stack.CoreDatabaseURL)
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
	svcs, err := startServices(ctx, cfg, say)
	if err != nil {
		return sum, err
	}
	if !cfg.KeepRunning {
		defer svcs.stop()
	}

	if err := waitBackload(ctx, svcs, cfg, seeded, users+cfg.Orgs, say); err != nil {
		return sum, err
	}

	say("[3/5] registering projections through the REST API (%s)", "http://"+addr(cfg.Ports.ControlHTTP))
	api := newAPIClient("http://"+addr(cfg.Ports.ControlHTTP), cfg.Token)
	for _, p := range demoProjections {
		created, err := api.ensureProjection(ctx, p)
		if err != nil {
			return sum, fmt.Errorf("control-plane: register %s: %w", p.Name, err)
		}
		if created {
			say("      %s: registered (key %s, fields %v)", p.Name, p.KeyTemplate, p.Fields)
		} else {
			say("      %s: already registered", p.Name)
		}
	}
	gens, err := waitLive(ctx, api, say, cfg.Stack.TemporalUIURL)
	if err != nil {
		return sum, err
	}
	sum.Generations = gens

	say("[4/5] starting the example edge service (examples/edge-service) on %s", addr(cfg.Ports.Edge))
	if err := svcs.startEdge(ctx, cfg); err != nil {
		return sum, err
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

// binaries builds the service binaries into RunDir/bin.
func buildBinaries(ctx context.Context, cfg Config) (map[string]string, error) {
	targets := []struct{ name, mod, pkg string }{
		{"core-publisher", "services/core-publisher", "."},
		{"cache-producer", "services/cache-producer", "."},
		{"control-plane", "services/control-plane", "."},
		{"edge-service", "examples", "./edge-service"},
	}
	out := map[string]string{}
	for _, t := range targets {
		if _, err := os.Stat(filepath.Join(cfg.RepoDir, t.mod, "go.mod")); err != nil {
			return nil, fmt.Errorf("%s: missing from this checkout (%s)", t.name, t.mod)
		}
		bin := filepath.Join(cfg.RunDir, "bin", t.name)
		if err := devstack.GoBuild(ctx, filepath.Join(cfg.RepoDir, t.mod), t.pkg, bin, false); err != nil {
			return nil, fmt.Errorf("%s: build failed: %w", t.name, err)
		}
		out[t.name] = bin
	}
	return out, nil
}

// waitBackload waits until core-publisher has backloaded the seeded tables into their topics and
// its outbox is drained, printing its progress, so the backfills replay complete topics.
func waitBackload(ctx context.Context, svcs *services, cfg Config, seeded bool, rows int, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	port := cfg.Ports.Publisher
	for {
		running, err1 := svcs.metric(ctx, port, "distcache_publisher_backload_running")
		done, err2 := svcs.metric(ctx, port, "distcache_publisher_backload_rows_total")
		lag, err3 := svcs.metric(ctx, port, "distcache_publisher_lag_seconds")
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

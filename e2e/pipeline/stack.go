// Package pipeline stands distcache's whole pipeline up, for the chaos and benchmark programs and
// for `make demo` (examples/demo).
//
// Start brings up a stack of its own: PostgreSQL (the core and control databases), a persistent
// redis-server, the kafkad broker and Temporal's dev server, all on free loopback ports under one
// run directory; the three services built from this checkout and run as processes; a sample core
// table with capture triggers; and a projection registered through the control-plane's REST API.
// Every component can be killed with SIGKILL and started again on the same port and data.
//
// Its parts serve a caller that has a stack already (make demo runs on `make up`'s): BuildServices
// and StartServices run the services against any Stack, API speaks the control-plane's REST API
// (register, status, WaitLive), Metric reads a service's Prometheus counters.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstack"
)

// ErrConfig is wrapped by errors about a Config.
var ErrConfig = errors.New("pipeline config")

// Config is one pipeline.
type Config struct {
	RepoDir string    // the repository root (holds go.work)
	RunDir  string    // binaries, data and logs; created if missing
	Items   int       // rows seeded into the sample table (backloaded before the projection is built)
	Token   string    // API bearer token of the control-plane and the core-publisher; a fixed test token when empty
	Out     io.Writer // progress lines; nil discards
	// PublisherEnv, ProducerEnv and ControlEnv are extra KEY=VALUE settings for the services.
	PublisherEnv, ProducerEnv, ControlEnv []string
	// ProducerReplicas is how many cache-producer replicas run; 0 means 1.
	ProducerReplicas int
	// StatStatements, when set, loads pg_stat_statements into PostgreSQL with this
	// pg_stat_statements.track ("top", or "all": the statements functions and triggers run too,
	// which costs each of them a little) and creates the extension in the core database (the
	// bench reads the statements' time per event).
	StatStatements string
	// Sentinel runs three redis-sentinels watching the primary and its replica (master set
	// SentinelMaster); the services and Client find the primary through them, and the Redis
	// components of the chaos run kill whichever node is the primary or the replica then.
	Sentinel bool
	// RedisAppendFsync is the Redis nodes' appendfsync: "always" (the default: a killed node
	// loses nothing it acknowledged, at the cost of an fsync per write and of stalls while the
	// AOF is rewritten) or "everysec" (what most deployments run: fsync in the background once a
	// second).
	RedisAppendFsync string
}

// SentinelMaster is the master set the pipeline's sentinels watch.
const SentinelMaster = "distcache-chaos"

// Component is a part of the pipeline that can crash and come back.
type Component interface {
	Name() string
	Kill() error                     // SIGKILL, as a crash would
	Start(ctx context.Context) error // start again on the same port and data, wait until healthy
}

// Pipeline is a running pipeline.
type Pipeline struct {
	cfg Config
	say func(string, ...any)

	PG         *devstack.Postgres
	CoreURL    string
	ControlURL string
	Redis      *Program // redis-server with an fsync'd append-only file: a crash loses nothing acknowledged
	RedisAddr  string
	// RedisReplica is a replica of Redis (no persistence: a restart resyncs from the primary),
	// which edges read first.
	RedisReplica     *Program
	RedisReplicaAddr string
	// Sentinels watch Redis and RedisReplica when Config.Sentinel is set.
	Sentinels     []*devstack.Sentinel
	SentinelAddrs []string
	Kafka         *devstack.Kafka
	Temporal      *devstack.Temporal

	// Services are the three services (Publisher, Producer, Control and their addresses).
	*Services

	stops []func() error
}

// Start starts the stack, the services and the sample projection, and returns once the
// projection's first generation is live.
func Start(ctx context.Context, cfg Config) (_ *Pipeline, err error) {
	if cfg.RepoDir == "" || cfg.RunDir == "" {
		return nil, fmt.Errorf("%w: RepoDir and RunDir are required", ErrConfig)
	}
	if cfg.Items < 1 {
		return nil, fmt.Errorf("%w: Items must be positive, got %d", ErrConfig, cfg.Items)
	}
	if cfg.Token == "" {
		cfg.Token = "e2e-control-plane-token"
	}
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	p := &Pipeline{cfg: cfg, say: func(f string, a ...any) { fmt.Fprintf(out, f+"\n", a...) }}
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()
	if err := os.MkdirAll(cfg.RunDir, 0o755); err != nil {
		return nil, err
	}
	_ = os.Chmod(cfg.RunDir, 0o755) // the postgres user must traverse it

	// Binaries build while the stack starts.
	var bins Binaries
	var buildErr error
	var bw sync.WaitGroup
	bw.Add(1)
	go func() {
		defer bw.Done()
		bins, buildErr = BuildServices(ctx, cfg.RepoDir, filepath.Join(cfg.RunDir, "bin"))
	}()
	stackErr := p.startStack(ctx)
	bw.Wait()
	if stackErr != nil {
		return nil, stackErr
	}
	if buildErr != nil {
		return nil, buildErr
	}

	// As `make migrate` does: the core set on the core database, the control set on the
	// registry's. The services only check them.
	for _, db := range []struct {
		url string
		set migrations.Set
	}{{p.CoreURL, migrations.Core}, {p.ControlURL, migrations.Control}} {
		if err := migrations.Up(ctx, db.url, db.set); err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
	}
	if err := prepareCore(ctx, p.CoreURL, cfg.Items); err != nil {
		return nil, err
	}
	if cfg.StatStatements != "" {
		if err := createExtension(ctx, p.CoreURL, "pg_stat_statements"); err != nil {
			return nil, err
		}
	}
	p.say("  seeded %d items", cfg.Items)
	p.Services, err = StartServices(ctx, ServicesConfig{
		RunDir: cfg.RunDir, Token: cfg.Token,
		Stack: Stack{
			CoreURL: p.CoreURL, ControlURL: p.ControlURL, RedisAddr: p.RedisAddr,
			RedisSentinelMaster: map[bool]string{true: SentinelMaster}[p.cfg.Sentinel], RedisSentinelAddrs: p.SentinelAddrs,
			KafkaBrokers: p.Kafka.Addr, TemporalHostPort: p.Temporal.HostPort,
		},
		PublisherEnv: cfg.PublisherEnv, ProducerEnv: cfg.ProducerEnv, ControlEnv: cfg.ControlEnv,
		ProducerReplicas: cfg.ProducerReplicas,
		Say:              func(f string, a ...any) { p.say("  "+f, a...) },
	}, bins)
	if err != nil {
		return nil, err
	}
	api := NewAPI("http://"+p.ControlHTTP, cfg.Token)
	if err := api.CreateProjection(ctx, Projection); err != nil {
		return nil, fmt.Errorf("register projection %s: %w", Projection.Name, err)
	}
	t0 := time.Now()
	if _, err := api.WaitLive(ctx, []string{Projection.Name}, 5*time.Minute, nil); err != nil {
		return nil, err
	}
	p.say("  projection %s live (backfill of %d items in %v)", Projection.Name, cfg.Items, time.Since(t0).Round(time.Millisecond))
	return p, nil
}

func (p *Pipeline) startStack(ctx context.Context) error {
	if err := devstack.EnsureInstalled(ctx); err != nil {
		return err
	}
	dir := p.cfg.RunDir
	pg, err := devstack.StartPostgres(ctx, devstack.PostgresConfig{Dir: filepath.Join(dir, "postgres"), Mode: devstack.Attached})
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	p.PG = pg
	p.stops = append(p.stops, pg.Stop)
	if p.cfg.StatStatements != "" {
		if err := p.enableStatStatements(ctx, p.cfg.StatStatements); err != nil {
			return err
		}
	}
	for _, db := range []string{"core", "control"} {
		if err := pg.CreateDatabase(ctx, db); err != nil {
			return err
		}
	}
	p.CoreURL, p.ControlURL = pg.URL("core"), pg.URL("control")

	port, err := devstack.FreePort()
	if err != nil {
		return err
	}
	p.RedisAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return err
	}
	bin, err := lookRedis()
	if err != nil {
		return err
	}
	// Each node reads a config file of its own: the sentinels rewrite it (CONFIG REWRITE) when
	// they change the node's role, so a node restarted after a failover keeps its new role.
	pconf, err := writeRedisConf(rdir, port, "", p.cfg.RedisAppendFsync)
	if err != nil {
		return err
	}
	p.Redis = NewProgram(devstack.ProgramConfig{
		Name: "redis", Dir: rdir, Mode: devstack.Attached, Args: []string{bin, pconf},
		Ready: func(ctx context.Context) error { return pingRedis(ctx, p.RedisAddr) },
	}, "")
	if err := p.Redis.Start(ctx); err != nil {
		return err
	}
	p.stops = append(p.stops, p.Redis.Stop)
	rport, err := devstack.FreePort()
	if err != nil {
		return err
	}
	p.RedisReplicaAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(rport))
	rrdir := filepath.Join(dir, "redis-replica")
	if err := os.MkdirAll(rrdir, 0o755); err != nil {
		return err
	}
	rconf, err := writeRedisConf(rrdir, rport, p.RedisAddr, p.cfg.RedisAppendFsync)
	if err != nil {
		return err
	}
	p.RedisReplica = NewProgram(devstack.ProgramConfig{
		Name: "redis replica", Dir: rrdir, Mode: devstack.Attached, Args: []string{bin, rconf},
		Ready: func(ctx context.Context) error { return replicaSynced(ctx, p.RedisReplicaAddr) },
	}, "")
	if err := p.RedisReplica.Start(ctx); err != nil {
		return err
	}
	p.stops = append(p.stops, p.RedisReplica.Stop)
	if p.cfg.Sentinel {
		for i := range 3 {
			sn, err := devstack.StartSentinel(ctx, devstack.SentinelConfig{
				Dir: filepath.Join(dir, "sentinel-"+strconv.Itoa(i+1)), Master: SentinelMaster, Primary: p.RedisAddr,
				Quorum: 2, DownAfter: time.Second, FailoverTimeout: 10 * time.Second, Replicas: 1, Mode: devstack.Attached,
			})
			if err != nil {
				return fmt.Errorf("start sentinel: %w", err)
			}
			p.stops = append(p.stops, sn.Stop)
			p.Sentinels = append(p.Sentinels, sn)
			p.SentinelAddrs = append(p.SentinelAddrs, sn.Addr)
		}
	}

	kbin, err := p.toolBin(ctx, "kafkad", filepath.Join(p.cfg.RepoDir, "tools"), "./cmd/kafkad", false)
	if err != nil {
		return err
	}
	k, err := devstack.StartKafka(ctx, devstack.KafkaConfig{Bin: kbin, Dir: filepath.Join(dir, "kafka"), Mode: devstack.Attached})
	if err != nil {
		return fmt.Errorf("start kafka: %w", err)
	}
	p.Kafka = k
	p.stops = append(p.stops, k.Stop)

	tbin, err := p.toolBin(ctx, "temporal", filepath.Join(p.cfg.RepoDir, "tools", "temporal"), "github.com/temporalio/cli/cmd/temporal", true)
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	tmp, err := devstack.StartTemporal(tctx, devstack.TemporalConfig{Bin: tbin, Dir: filepath.Join(dir, "temporal"), Headless: true, Mode: devstack.Attached})
	if err != nil {
		return fmt.Errorf("start temporal: %w", err)
	}
	p.Temporal = tmp
	p.stops = append(p.stops, tmp.Stop)
	p.say("  stack up: postgres %s, redis %s, kafka %s, temporal %s", pg.Addr, p.RedisAddr, k.Addr, tmp.HostPort)
	return nil
}

// toolBin returns RepoDir/.run/bin/name, building it when missing.
func (p *Pipeline) toolBin(ctx context.Context, name, modDir, pkg string, outside bool) (string, error) {
	bin := filepath.Join(p.cfg.RepoDir, ".run", "bin", name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	p.say("  building %s (once)", name)
	if err := devstack.GoBuild(ctx, modDir, pkg, bin, outside); err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	return bin, nil
}

func lookRedis() (string, error) {
	for _, d := range []string{"/usr/bin", "/usr/local/bin", "/usr/sbin"} {
		if _, err := os.Stat(filepath.Join(d, "redis-server")); err == nil {
			return filepath.Join(d, "redis-server"), nil
		}
	}
	return "", fmt.Errorf("%w: redis-server", devstack.ErrMissing)
}

// replicaSynced answers nil once the replica at addr has finished its sync with the primary.
func replicaSynced(ctx context.Context, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "master_link_status:up") || strings.Contains(info, "master_sync_in_progress:1") {
		return errors.New("replica not in sync yet")
	}
	return nil
}

// writeRedisConf writes dir/redis.conf for a node on port (a replica of primary when not empty):
// append-only with fsync (Config.RedisAppendFsync) always by default, so a killed node loses
// nothing it acknowledged.
func writeRedisConf(dir string, port int, primary, fsync string) (string, error) {
	switch fsync {
	case "":
		fsync = "always"
	case "always", "everysec":
	default:
		return "", fmt.Errorf("redis appendfsync %q: want always or everysec", fsync)
	}
	body := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly yes\nappendfsync %s\n"+
		"daemonize no\nprotected-mode no\nloglevel warning\n", port, dir, fsync)
	if primary != "" {
		host, pport, err := net.SplitHostPort(primary)
		if err != nil {
			return "", err
		}
		body += fmt.Sprintf("replicaof %s %s\n", host, pport)
	}
	conf := filepath.Join(dir, "redis.conf")
	if _, err := os.Stat(conf); err == nil {
		return conf, nil // kept across restarts of the pipeline's run directory: it holds the node's role
	}
	return conf, os.WriteFile(conf, []byte(body), 0o644)
}

// PrimaryClient returns a client of the Redis primary: through the sentinels when they run.
func (p *Pipeline) PrimaryClient() *redis.Client {
	if len(p.SentinelAddrs) > 0 {
		return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster, SentinelAddrs: p.SentinelAddrs})
	}
	return redis.NewClient(&redis.Options{Addr: p.RedisAddr})
}

// roles returns the Redis node programs as the sentinels see them now: the primary, then the
// replica (Redis, RedisReplica without sentinels).
func (p *Pipeline) roles(ctx context.Context) (primary, replica *Program, primaryAddr string) {
	if len(p.Sentinels) > 0 {
		for _, sn := range p.Sentinels {
			a, err := sn.MasterAddr(ctx)
			if err != nil {
				continue
			}
			if a == p.RedisReplicaAddr {
				return p.RedisReplica, p.Redis, a
			}
			return p.Redis, p.RedisReplica, p.RedisAddr
		}
	}
	return p.Redis, p.RedisReplica, p.RedisAddr
}

func pingRedis(ctx context.Context, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	return c.Ping(ctx).Err()
}

// Stop stops everything Start started.
func (p *Pipeline) Stop() {
	if p.Services != nil {
		p.Services.Stop()
	}
	for i := len(p.stops) - 1; i >= 0; i-- {
		_ = p.stops[i]()
	}
	p.stops = nil
}

// Components returns the parts the chaos run crashes, in its order: publisher, the producer
// replica that writes the sample projection (killed; then paused past the group's session
// timeout and resumed), the Redis primary (with sentinels, a failover), its replica (edges read
// it first), broker, PostgreSQL, Redis losing its data while it runs (FLUSHALL) and the primary
// restarting empty (its append-only file gone). Nobody acts on the losses.
func (p *Pipeline) Components() []Component {
	return []Component{p.Publisher, &ownerComponent{p: p}, &ownerComponent{p: p, pause: true},
		&redisComponent{p: p}, &redisComponent{p: p, replica: true},
		kafkaComponent{p.Kafka}, pgComponent{p.PG}, flushComponent{p: p}, &redisComponent{p: p, empty: true}}
}

// ownerComponent is the cache-producer replica that writes the sample projection when it is
// killed (or, with pause, stopped with SIGSTOP): with several replicas the others take its topic
// over (the consumer group's session timeout); Start starts it again as a replica (SIGCONT: a
// zombie whose writes are fenced).
type ownerComponent struct {
	p      *Pipeline
	pause  bool
	killed *Program
}

func (c *ownerComponent) Name() string {
	switch {
	case c.pause:
		return "cache-producer owner (SIGSTOP)"
	case len(c.p.Producers) > 1:
		return "cache-producer (the owner)"
	}
	return NameProducer
}

// Kill kills the replica whose /status lists the projection (the first replica when none does).
func (c *ownerComponent) Kill() error {
	c.killed = c.p.Producers[0]
	for i, addr := range c.p.ProducerAddrs {
		body, err := getBody(context.Background(), "http://"+addr+"/status")
		if err == nil && strings.Contains(body, `"projection":"`+Projection.Name+`"`) {
			c.killed = c.p.Producers[i]
			break
		}
	}
	if c.pause {
		return c.killed.Signal(syscall.SIGSTOP)
	}
	return c.killed.Kill()
}

// PauseFor is how long the chaos run keeps a paused owner stopped: past the session timeout
// the chaos pipeline gives the producers (PRODUCER_GROUP_SESSION_TIMEOUT=6s), so it is a zombie
// when it resumes.
const PauseFor = 9 * time.Second

// ServedWhileDown: with several replicas, another one takes the topic over while this one is
// down.
func (c *ownerComponent) ServedWhileDown() bool { return len(c.p.Producers) > 1 }

// MinDown is how long the fault must last: a pause lasts PauseFor.
func (c *ownerComponent) MinDown() time.Duration {
	if c.pause {
		return PauseFor
	}
	return 0
}

func (c *ownerComponent) Start(ctx context.Context) error {
	if c.pause {
		return c.killed.Signal(syscall.SIGCONT)
	}
	return c.killed.Start(ctx)
}

// redisComponent is a Redis node killed with SIGKILL and started again: the primary (with
// sentinels: they promote the replica meanwhile, and the old primary comes back as a replica),
// the replica, or, with empty, the primary with its data removed before it starts again (a
// restart without persistence; with sentinels it comes back empty as a replica and resyncs).
type redisComponent struct {
	p       *Pipeline
	replica bool
	empty   bool
	killed  *Program
}

func (c *redisComponent) Name() string {
	switch {
	case c.empty && len(c.p.Sentinels) > 0:
		return "Redis primary restarts empty (failover)"
	case c.empty:
		return "Redis restarts empty"
	case c.replica:
		return "redis replica"
	case len(c.p.Sentinels) > 0:
		return "redis primary (Sentinel failover)"
	}
	return "redis"
}

// ServedWhileDown: with sentinels, a killed primary is replaced by its promoted replica.
func (c *redisComponent) ServedWhileDown() bool { return len(c.p.Sentinels) > 0 && !c.replica }

// NodeDown: a Redis node is down (an edge that reads that node alone waits for its restart).
func (c *redisComponent) NodeDown() bool { return true }

func (c *redisComponent) Kill() error {
	primary, replica, _ := c.p.roles(context.Background())
	c.killed = primary
	if c.replica {
		c.killed = replica
	}
	if err := c.killed.Kill(); err != nil {
		return err
	}
	if c.empty {
		return removeRedisData(c.killed.cfg.Dir)
	}
	return nil
}

func (c *redisComponent) Start(ctx context.Context) error {
	if err := c.killed.Start(ctx); err != nil {
		return err
	}
	if len(c.p.Sentinels) == 0 {
		return nil
	}
	// The node is back; wait until the sentinels see one primary and the other node as its
	// replica again, in sync.
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, _, paddr := c.p.roles(ctx)
		raddr := c.p.RedisReplicaAddr
		if paddr == c.p.RedisReplicaAddr {
			raddr = c.p.RedisAddr
		}
		err := replicaSynced(ctx, raddr)
		if err == nil {
			for _, sn := range c.p.Sentinels {
				if err = sn.Health(ctx); err != nil {
					break
				}
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: the pair did not settle: %w", c.Name(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond): // polling the replication state
		}
	}
}

// removeRedisData removes the append-only files and dump of the Redis whose directory is dir.
func removeRedisData(dir string) error {
	for _, name := range []string{"appendonlydir", "appendonly.aof", "dump.rdb"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// flushComponent is Redis losing everything while it runs: Kill is a FLUSHALL of the primary,
// Start does nothing (the producers rebuild from the topics, the control-plane restores the
// pointer, the edges serve what they hold meanwhile).
type flushComponent struct{ p *Pipeline }

func (c flushComponent) Name() string { return "Redis loses its data (FLUSHALL)" }
func (c flushComponent) Kill() error {
	rdb := c.p.PrimaryClient()
	defer rdb.Close()
	return rdb.FlushAll(context.Background()).Err()
}
func (c flushComponent) Start(context.Context) error { return nil }

// Instant says the fault is over when Kill returns: there is nothing to hold down.
func (c flushComponent) Instant() bool { return true }

type kafkaComponent struct{ k *devstack.Kafka }

func (c kafkaComponent) Name() string                    { return "broker (kafkad)" }
func (c kafkaComponent) Kill() error                     { return c.k.Kill() }
func (c kafkaComponent) Start(ctx context.Context) error { return c.k.Start(ctx) }

type pgComponent struct{ pg *devstack.Postgres }

func (c pgComponent) Name() string { return "postgresql" }
func (c pgComponent) Kill() error  { return c.pg.Kill() }

// Start waits for the killed postmaster's port to be released, then starts it again.
func (c pgComponent) Start(ctx context.Context) error { return c.pg.Restart(ctx) }

// Program is a process run with devstack.StartProgram that can be killed and started again.
type Program struct {
	name string
	addr string // written to Dir/<name>.addr at each start when set
	cfg  devstack.ProgramConfig
	mu   sync.Mutex
	prog *devstack.Program
}

var _ Component = (*Program)(nil)

// NewProgram returns a program that is not started yet. addr, when not empty, is where it listens:
// Start writes it to cfg.Dir/<cfg.Name>.addr, where `make status` looks for it.
func NewProgram(cfg devstack.ProgramConfig, addr string) *Program {
	return &Program{name: cfg.Name, addr: addr, cfg: cfg}
}

// Name is the program's name.
func (s *Program) Name() string { return s.name }

// Start starts the program and waits until it is ready.
func (s *Program) Start(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pr, err := devstack.StartProgram(sctx, s.cfg)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	s.mu.Lock()
	s.prog = pr
	s.mu.Unlock()
	if s.addr != "" {
		if err := os.WriteFile(filepath.Join(s.cfg.Dir, s.name+".addr"), []byte(s.addr), 0o644); err != nil {
			return fmt.Errorf("start %s: %w", s.name, err)
		}
	}
	return nil
}

// Kill sends SIGKILL and waits until the process is gone.
func (s *Program) Kill() error {
	s.mu.Lock()
	pr := s.prog
	s.mu.Unlock()
	if pr == nil {
		return nil
	}
	return pr.Kill()
}

// Stop stops the program gracefully.
func (s *Program) Stop() error {
	s.mu.Lock()
	pr := s.prog
	s.mu.Unlock()
	if pr == nil {
		return nil
	}
	return pr.Stop(20 * time.Second)
}

// Signal sends sig to the program (SIGSTOP and SIGCONT pause and resume it).
func (s *Program) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	pr := s.prog
	s.mu.Unlock()
	if pr == nil {
		return nil
	}
	return pr.Signal(sig)
}

// LogTail returns the last lines of the program's log.
func (s *Program) LogTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prog == nil {
		return ""
	}
	return s.prog.LogTail()
}

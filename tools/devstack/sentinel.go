package devstack

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelConfig says where and how to run one Redis Sentinel (Debian's redis-sentinel).
type SentinelConfig struct {
	Name   string // process name; default "sentinel-<port>"
	Dir    string // working directory: the sentinel rewrites its config file there
	Port   int    // 0 picks a free port
	Master string // the master set name
	// Primary is the "host:port" of the primary to monitor at first; after a failover the
	// sentinel follows the promoted replica.
	Primary string
	// Quorum is how many sentinels must agree the primary is down (default 1).
	Quorum int
	// DownAfter is how long the primary may not answer before it is subjectively down
	// (default 1 s).
	DownAfter time.Duration
	// FailoverTimeout bounds one failover (default 10 s).
	FailoverTimeout time.Duration
	// Replicas is how many replicas the sentinel must see up before Start returns.
	Replicas int
	Mode     Mode
}

// Sentinel is one running Redis Sentinel.
type Sentinel struct {
	cfg  SentinelConfig
	proc *process
	// Addr is "127.0.0.1:port".
	Addr string
}

// StartSentinel starts a sentinel monitoring cfg.Primary as cfg.Master and waits until it knows
// the primary and sees cfg.Replicas replicas up. The program is Debian's redis-sentinel (from
// the redis-sentinel package, installed by EnsureInstalled when missing).
func StartSentinel(ctx context.Context, cfg SentinelConfig) (*Sentinel, error) {
	var s *Sentinel
	err := retryPorts(cfg.Port == 0, func() error {
		var err error
		if s, err = newSentinel(cfg); err != nil {
			return err
		}
		return s.Start(ctx)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func newSentinel(cfg SentinelConfig) (*Sentinel, error) {
	if cfg.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		cfg.Port = p
	}
	if cfg.Name == "" {
		cfg.Name = "sentinel-" + strconv.Itoa(cfg.Port)
	}
	if cfg.Quorum <= 0 {
		cfg.Quorum = 1
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = time.Second
	}
	if cfg.FailoverTimeout <= 0 {
		cfg.FailoverTimeout = 10 * time.Second
	}
	host, port, err := net.SplitHostPort(cfg.Primary)
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: primary %q: %w", cfg.Name, cfg.Primary, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	bin, err := findProgram("redis-sentinel")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(cfg.Dir, cfg.Name+".conf")
	if _, err := os.Stat(conf); err != nil { // kept across restarts: it records what the sentinel learnt
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s\n"+
			"sentinel monitor %s %s %s %d\nsentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s %d\nsentinel parallel-syncs %s 1\n",
			cfg.Port, cfg.Dir, cfg.Master, host, port, cfg.Quorum, cfg.Master, cfg.DownAfter.Milliseconds(),
			cfg.Master, cfg.FailoverTimeout.Milliseconds(), cfg.Master)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil { // the sentinel rewrites it
			return nil, err
		}
	}
	s := &Sentinel{cfg: cfg, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))}
	s.proc = newProcess(cfg.Name, cfg.Dir, cfg.Mode, bin, conf)
	return s, nil
}

// Start starts the sentinel (again) and waits until it is healthy.
func (s *Sentinel) Start(ctx context.Context) error {
	return s.proc.startServer(ctx, s.cfg.Port, "healthy", s.Health)
}

// Health checks that the sentinel knows its master and sees the wanted replicas up.
func (s *Sentinel) Health(ctx context.Context) error {
	return ProbeSentinel(ctx, s.Addr, s.cfg.Master, s.cfg.Replicas)
}

// ProbeSentinel checks that the sentinel at addr knows master and sees replicas replicas up.
func ProbeSentinel(ctx context.Context, addr, master string, replicas int) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer sc.Close()
	if _, err := sc.GetMasterAddrByName(ctx, master).Result(); err != nil {
		return fmt.Errorf("sentinel %s: master %s: %w", addr, master, err)
	}
	got, err := sc.Replicas(ctx, master).Result()
	if err != nil {
		return fmt.Errorf("sentinel %s: replicas: %w", addr, err)
	}
	up := 0
	for _, r := range got {
		if r["flags"] == "slave" {
			up++
		}
	}
	if up < replicas {
		return fmt.Errorf("sentinel %s sees %d replicas up, want %d", addr, up, replicas)
	}
	return nil
}

// MasterAddr asks the sentinel which address is the primary now.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer sc.Close()
	a, err := sc.GetMasterAddrByName(ctx, s.cfg.Master).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(a[0], a[1]), nil
}

// Port returns the sentinel's TCP port.
func (s *Sentinel) Port() int { return s.cfg.Port }

// PID returns the sentinel's process id.
func (s *Sentinel) PID() int { return s.proc.PID() }

// Stop stops the sentinel (SIGTERM, then SIGKILL after 10 s).
func (s *Sentinel) Stop() error { return s.proc.stop(10 * time.Second) }

// Kill kills the sentinel with SIGKILL.
func (s *Sentinel) Kill() error { return s.proc.kill() }

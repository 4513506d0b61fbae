package devstack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig says where and how to run one redis-server.
type RedisConfig struct {
	Name      string // process name, used for log and PID files; default "redis-<port>"
	Dir       string // working directory (data, logs); created if missing
	Port      int    // 0 picks a free port
	ReplicaOf string // "host:port" of the primary, for a replica
	Password  string // requirepass (and masterauth for replicas); empty for none
	Cluster   bool   // cluster-enabled yes
	// Persist keeps the data across restarts: append-only file, fsync every second (what the
	// local stack of make up runs, so a make down / make up keeps the projections). Default off:
	// tests' servers start empty and skip the disk writes.
	Persist bool
	TLS     *RedisTLS
	Mode    Mode
}

// RedisTLS makes the server speak TLS only, on Port (no plaintext port),
// with these PEM files. Clients are not asked for certificates.
type RedisTLS struct {
	CertFile, KeyFile string // the server's certificate (for 127.0.0.1) and key
	CAFile            string // the CA that signed it
}

// ClientConfig returns a TLS client configuration that trusts CAFile.
func (t *RedisTLS) ClientConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("redis tls: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("redis tls: no certificate in %s", t.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Redis is one running redis-server.
type Redis struct {
	cfg  RedisConfig
	proc *process
	// Addr is "127.0.0.1:port".
	Addr string
}

// StartRedis starts redis-server and waits until it answers PING (and, for a replica, until its
// link to the primary is up).
func StartRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	var r *Redis
	err := retryPorts(cfg.Port == 0, func() error {
		var err error
		if r, err = newRedis(cfg); err != nil {
			return err
		}
		return r.Start(ctx)
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func newRedis(cfg RedisConfig) (*Redis, error) {
	if cfg.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		cfg.Port = p
	}
	if cfg.Name == "" {
		cfg.Name = "redis-" + strconv.Itoa(cfg.Port)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis dir: %w", err)
	}
	bin, err := findProgram("redis-server")
	if err != nil {
		return nil, err
	}
	args := []string{bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(cfg.Port),
		"--dir", cfg.Dir,
		"--dbfilename", cfg.Name + ".rdb",
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--loglevel", "warning",
		"--repl-diskless-sync-delay", "0",
	}
	if cfg.Persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec", "--appendfilename", cfg.Name+".aof")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if cfg.Password != "" {
		args = append(args, "--requirepass", cfg.Password, "--masterauth", cfg.Password)
	}
	if cfg.TLS != nil {
		for i := range args {
			if args[i] == "--port" {
				args[i+1] = "0" // TLS only
			}
		}
		args = append(args, "--tls-port", strconv.Itoa(cfg.Port),
			"--tls-cert-file", cfg.TLS.CertFile, "--tls-key-file", cfg.TLS.KeyFile,
			"--tls-ca-cert-file", cfg.TLS.CAFile, "--tls-auth-clients", "no")
	}
	if cfg.ReplicaOf != "" {
		host, port, err := net.SplitHostPort(cfg.ReplicaOf)
		if err != nil {
			return nil, fmt.Errorf("redis replicaof %q: %w", cfg.ReplicaOf, err)
		}
		args = append(args, "--replicaof", host, port)
	}
	if cfg.Cluster {
		args = append(args, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(cfg.Dir, cfg.Name+"-nodes.conf"),
			"--cluster-node-timeout", "2000")
	}
	if cfg.TLS != nil {
		if _, err := cfg.TLS.ClientConfig(); err != nil {
			return nil, err
		}
	}
	r := &Redis{cfg: cfg, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))}
	r.proc = newProcess(cfg.Name, cfg.Dir, cfg.Mode, args...)
	return r, nil
}

// Start starts the server (again) on its port and waits until it is healthy.
func (r *Redis) Start(ctx context.Context) error {
	return r.proc.startServer(ctx, r.cfg.Port, "healthy", r.Health)
}

// Client returns a new go-redis client for this server (over TLS when it
// serves TLS).
func (r *Redis) Client() *redis.Client {
	return redis.NewClient(r.options())
}

func (r *Redis) options() *redis.Options {
	o := &redis.Options{Addr: r.Addr, Password: r.cfg.Password, MaxRetries: -1, ContextTimeoutEnabled: true}
	if r.cfg.TLS != nil {
		o.TLSConfig, _ = r.cfg.TLS.ClientConfig() // checked when the server was configured
	}
	return o
}

// Health pings the server; a replica must also have its link to the primary up.
func (r *Redis) Health(ctx context.Context) error {
	return probeRedis(ctx, r.options(), r.cfg.ReplicaOf != "")
}

// ProbeRedis pings the server at addr; when replica is true its link to the primary must be up.
func ProbeRedis(ctx context.Context, addr, password string, replica bool) error {
	return probeRedis(ctx, &redis.Options{Addr: addr, Password: password, MaxRetries: -1}, replica)
}

func probeRedis(ctx context.Context, o *redis.Options, replica bool) error {
	c := redis.NewClient(o)
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if replica {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("info replication: %w", err)
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica link to its primary is not up")
		}
	}
	return nil
}

// Port returns the server's TCP port.
func (r *Redis) Port() int { return r.cfg.Port }

// PID returns the server's process id.
func (r *Redis) PID() int { return r.proc.PID() }

// Stop shuts the server down (SIGTERM, then SIGKILL after 10 s).
func (r *Redis) Stop() error { return r.proc.stop(10 * time.Second) }

// Kill kills the server with SIGKILL, as a crash would.
func (r *Redis) Kill() error { return r.proc.kill() }

// Restart kills the server if it runs and starts it again on the same port.
func (r *Redis) Restart(ctx context.Context) error {
	if err := r.Kill(); err != nil {
		return err
	}
	return r.Start(ctx)
}

// LogPath returns the path of the server's log file.
func (r *Redis) LogPath() string { return r.proc.logPath }

// RedisCluster is a Redis Cluster of masters and replicas on loopback.
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts masters*(1+replicasPerMaster) cluster-enabled servers under dir and
// joins them with `redis-cli --cluster create`, then waits until every node reports
// cluster_state:ok.
func StartRedisCluster(ctx context.Context, dir string, masters, replicasPerMaster int, mode Mode) (*RedisCluster, error) {
	n := masters * (1 + replicasPerMaster)
	c := &RedisCluster{}
	for i := 0; i < n; i++ {
		r, err := StartRedis(ctx, RedisConfig{Dir: dir, Cluster: true, Mode: mode})
		if err != nil {
			_ = c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, r)
	}
	cli, err := findProgram("redis-cli")
	if err != nil {
		_ = c.Stop()
		return nil, err
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	if out, err := runCommand(ctx, cli, args...); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := c.waitOK(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *RedisCluster) waitOK(ctx context.Context) error {
	for _, r := range c.Nodes {
		err := r.proc.waitUntil(ctx, "in a healthy cluster", func(ctx context.Context) error {
			cl := r.Client()
			defer cl.Close()
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("cluster state not ok")
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	// Every node must also know every slot's owner before clients route reliably.
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	for {
		err := cc.ForEachShard(ctx, func(ctx context.Context, s *redis.Client) error { return s.Ping(ctx).Err() })
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis cluster not routable: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Addrs returns every node's address.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, r := range c.Nodes {
		out[i] = r.Addr
	}
	return out
}

// Stop stops every node.
func (c *RedisCluster) Stop() error {
	var first error
	for _, r := range c.Nodes {
		if err := r.Stop(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

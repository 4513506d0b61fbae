// Package redisconf reads a service's Redis connection from <PREFIX>_REDIS_*
// environment variables into a distcache.RedisConfig, and builds the
// go-redis clients only through it (distcache.RedisConfig.NewClient and
// NewClients), so every service and the edge library choose between a
// standalone Redis, a Redis Cluster and Redis Sentinel the same way.
//
// The deployment is chosen by the variables set:
//
//   - Sentinel: <PREFIX>_REDIS_SENTINEL_MASTER and _REDIS_SENTINEL_ADDRS (and
//     no _REDIS_ADDRS: the sentinels name the primary);
//   - Cluster: _REDIS_ADDRS lists seed nodes and _REDIS_CLUSTER is true (its
//     default when _REDIS_ADDRS lists several addresses);
//   - standalone: _REDIS_ADDRS is the primary, with read replicas in
//     _REDIS_REPLICAS for a service that reads through replicas.
package redisconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/tlsconf"
)

// Variable names, under the service's prefix: PRODUCER_REDIS_ADDRS, ...
const (
	VarAddrs                 = "REDIS_ADDRS"    // the primary, or Cluster seed nodes (host:port, comma-separated)
	VarReplicas              = "REDIS_REPLICAS" // read replicas of a standalone primary
	VarCluster               = "REDIS_CLUSTER"  // default: true when REDIS_ADDRS lists several
	VarSentinelMaster        = "REDIS_SENTINEL_MASTER"
	VarSentinelAddrs         = "REDIS_SENTINEL_ADDRS"
	VarSentinelUsername      = "REDIS_SENTINEL_USERNAME"
	VarSentinelPassword      = "REDIS_SENTINEL_PASSWORD" // secret
	VarUsername              = "REDIS_USERNAME"          // ACL user (default: the default user)
	VarPassword              = "REDIS_PASSWORD"          // secret
	VarTLS                   = "REDIS_TLS"
	VarTLSCAFile             = "REDIS_TLS_CA_FILE"
	VarTLSCertFile           = "REDIS_TLS_CERT_FILE"
	VarTLSKeyFile            = "REDIS_TLS_KEY_FILE"
	VarTLSInsecureSkipVerify = "REDIS_TLS_INSECURE_SKIP_VERIFY"
	// VarAllowEviction skips the start-up check that Redis's maxmemory-policy is noeviction
	// (CheckEvictionPolicy): for people who understand that evicted offsets, indexes and
	// pointers are lost silently, or whose Redis refuses CONFIG GET.
	VarAllowEviction = "REDIS_ALLOW_EVICTION"
)

// Config is a Redis connection read from the environment.
type Config struct {
	Addrs            []string
	Replicas         []string
	Cluster          bool
	SentinelMaster   string
	SentinelAddrs    []string
	SentinelUsername string
	SentinelPassword string // secret
	Username         string
	Password         string // secret
	TLS              tlsconf.Config
	AllowEviction    bool // skip CheckEvictionPolicy's refusal

	allowEvictionVar string // the full variable name, for messages
}

// Option adjusts what Load accepts.
type Option func(*options)

type options struct{ replicaReads bool }

// WithReplicaReads accepts <PREFIX>_REDIS_REPLICAS: for a service that reads
// through read replicas (NewClients). Without it the variable is refused:
// a service that reads its own writes must not be pointed at replicas it
// would ignore.
func WithReplicaReads() Option { return func(o *options) { o.replicaReads = true } }

// Load reads the Redis variables under r's prefix. Errors are recorded in r.
func Load(r *envconf.Reader, opts ...Option) Config {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	addrs, replicas, cluster := r.Name(VarAddrs), r.Name(VarReplicas), r.Name(VarCluster)
	master, sentinels := r.Name(VarSentinelMaster), r.Name(VarSentinelAddrs)
	c := Config{
		Addrs:            r.HostPorts(addrs),
		Replicas:         r.HostPorts(replicas),
		SentinelMaster:   r.String(master, ""),
		SentinelAddrs:    r.HostPorts(sentinels),
		SentinelUsername: r.String(r.Name(VarSentinelUsername), ""),
		SentinelPassword: r.Secret(r.Name(VarSentinelPassword)),
		Username:         r.String(r.Name(VarUsername), ""),
		Password:         r.Secret(r.Name(VarPassword)),
		TLS: tlsconf.Load(r, tlsconf.Vars{
			Enabled: VarTLS, CAFile: VarTLSCAFile, CertFile: VarTLSCertFile, KeyFile: VarTLSKeyFile,
			InsecureSkipVerify: VarTLSInsecureSkipVerify,
		}),
	}
	c.Cluster = r.Bool(cluster, len(c.Addrs) > 1)
	c.allowEvictionVar = r.Name(VarAllowEviction)
	c.AllowEviction = r.Bool(c.allowEvictionVar, false)
	sentinel := c.SentinelMaster != "" || r.Set(sentinels)
	switch {
	case sentinel:
		if c.SentinelMaster == "" {
			r.Fail(master, "required with %s (the master set name the sentinels monitor)", sentinels)
		}
		if !r.Set(sentinels) {
			r.Fail(sentinels, "required with %s (the sentinels, host:port, comma-separated)", master)
		}
		if r.Set(addrs) {
			r.Fail(addrs, "must be empty with %s: the sentinels name the primary", master)
		}
		if c.Cluster {
			r.Fail(cluster, "Redis Cluster and Sentinel are exclusive")
		}
		if r.Set(replicas) {
			r.Fail(replicas, "must be empty with %s: the sentinels name the replicas", master)
		}
	case !r.Set(addrs):
		r.Fail(addrs, "required (host:port of the primary, or seed nodes of a Redis Cluster, comma-separated; or set %s and %s)", master, sentinels)
	case len(c.Addrs) > 1 && !c.Cluster:
		r.Fail(cluster, "is false but %s lists %d addresses (only a Redis Cluster takes several)", addrs, len(c.Addrs))
	case c.Cluster && r.Set(replicas):
		r.Fail(replicas, "must be empty with %s=true: a Redis Cluster finds its replicas", cluster)
	}
	if r.Set(replicas) && !o.replicaReads {
		r.Fail(replicas, "this service reads its own writes from the primary and never from replicas; unset it")
	}
	if (c.SentinelUsername != "" || c.SentinelPassword != "") && !sentinel {
		r.Fail(r.Name(VarSentinelPassword), "sentinel credentials are set but %s is not", master)
	}
	return c
}

// RedisConfig returns the connection as the distcache.RedisConfig that
// builds its clients (reading the TLS files).
func (c Config) RedisConfig() (distcache.RedisConfig, error) {
	tc, err := c.TLS.Build()
	if err != nil {
		return distcache.RedisConfig{}, err
	}
	return distcache.RedisConfig{
		Addrs: c.Addrs, Replicas: c.Replicas, Cluster: c.Cluster,
		SentinelMaster: c.SentinelMaster, SentinelAddrs: c.SentinelAddrs,
		SentinelUsername: c.SentinelUsername, SentinelPassword: c.SentinelPassword,
		Username: c.Username, Password: c.Password, TLS: tc,
	}, nil
}

// NewClient builds the primary client (see distcache.RedisConfig.NewClient):
// a *redis.Client, through Sentinel or not, or a *redis.ClusterClient. The
// caller closes it.
func (c Config) NewClient() (redis.UniversalClient, error) {
	rc, err := c.RedisConfig()
	if err != nil {
		return nil, err
	}
	return rc.NewClient()
}

// NewClients builds the primary and the read clients (see
// distcache.RedisConfig.NewClients). The caller closes them.
func (c Config) NewClients() (*distcache.RedisClients, error) {
	rc, err := c.RedisConfig()
	if err != nil {
		return nil, err
	}
	return rc.NewClients()
}

// CheckEvictionPolicy refuses a Redis whose maxmemory-policy may evict keys
// (distcache.CheckEvictionPolicy), unless <PREFIX>_REDIS_ALLOW_EVICTION is
// true. While Redis cannot be reached it retries every retry interval until
// ctx ends, so a writer started before its Redis waits for it; a refused
// CONFIG GET is an error that names the variable that skips the check.
func (c Config) CheckEvictionPolicy(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger, retry time.Duration) error {
	if c.AllowEviction {
		log.Warn("redis eviction policy not checked", slog.String("because", c.allowEvictionVar+"=true"))
		return nil
	}
	for {
		err := distcache.CheckEvictionPolicy(ctx, rdb)
		var rerr redis.Error
		switch {
		case err == nil:
			return nil
		case errors.Is(err, distcache.ErrEvictionPolicy):
			return fmt.Errorf("%w (or set %s=true to run anyway)", err, c.allowEvictionVar)
		case errors.As(err, &rerr):
			return fmt.Errorf("%w: could not check that Redis never evicts keys; make sure maxmemory-policy is noeviction and set %s=true", err, c.allowEvictionVar)
		}
		log.Warn("redis eviction policy: waiting for redis", slog.Any("err", err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("check redis eviction policy: %w", err)
		case <-time.After(retry):
		}
	}
}

// Mode returns distcache.RedisStandalone, RedisCluster or RedisSentinel.
func (c Config) Mode() string {
	rc := distcache.RedisConfig{Cluster: c.Cluster, SentinelMaster: c.SentinelMaster, SentinelAddrs: c.SentinelAddrs}
	return rc.Mode()
}

// LogValue implements slog.LogValuer: the connection with its passwords
// masked.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("mode", c.Mode())}
	if c.Mode() == distcache.RedisSentinel {
		attrs = append(attrs,
			slog.String("sentinel_master", c.SentinelMaster),
			slog.Any("sentinel_addrs", c.SentinelAddrs),
			slog.String("sentinel_username", c.SentinelUsername),
			slog.String("sentinel_password", envconf.Mask(c.SentinelPassword)))
	} else {
		attrs = append(attrs, slog.Any("addrs", c.Addrs))
		if len(c.Replicas) > 0 {
			attrs = append(attrs, slog.Any("replicas", c.Replicas))
		}
	}
	return slog.GroupValue(append(attrs,
		slog.String("username", c.Username),
		slog.String("password", envconf.Mask(c.Password)),
		slog.Any("tls", c.TLS),
		slog.Bool("allow_eviction", c.AllowEviction),
	)...)
}

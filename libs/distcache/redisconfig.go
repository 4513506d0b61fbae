package distcache

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// RedisConfig says how to reach Redis: a standalone primary (with optional
// read replicas), a Redis Cluster, or a primary found through Redis Sentinel,
// with ACL credentials and TLS. NewClients and NewClient are the one place
// distcache's components build go-redis clients: the Client's WithAddrs,
// WithClusterAddrs and WithSentinel options fill a RedisConfig in, and the
// services build theirs from their environment (libs/svcconfig/redisconf).
type RedisConfig struct {
	// Addrs is, standalone, the primary's address (exactly one); with
	// Cluster, seed nodes of the cluster. Empty with Sentinel, which finds
	// the primary itself.
	Addrs []string
	// Replicas are read replicas of a standalone primary. A Cluster and a
	// Sentinel-managed set find their replicas themselves.
	Replicas []string
	// Cluster makes Addrs the seed nodes of a Redis Cluster.
	Cluster bool
	// SentinelMaster names the monitored master set; with SentinelAddrs (the
	// sentinels, host:port) it selects Sentinel mode.
	SentinelMaster string
	SentinelAddrs  []string
	// SentinelUsername and SentinelPassword authenticate to the sentinels,
	// when they require it (Username and Password are for the data nodes).
	SentinelUsername string
	SentinelPassword string
	// Username is the ACL user (empty: the default user); Password its
	// password (or the requirepass password).
	Username string
	Password string
	// TLS, when not nil, is used on every connection (sentinels included).
	TLS *tls.Config
	// DialerRetries bounds the dial attempts of a connection (0: go-redis's
	// default).
	DialerRetries int
}

// Redis deployment modes, as returned by RedisConfig.Mode.
const (
	RedisStandalone = "standalone"
	RedisCluster    = "cluster"
	RedisSentinel   = "sentinel"
)

// Mode returns RedisSentinel when a sentinel master or sentinel address is
// set, else RedisCluster when Cluster is set, else RedisStandalone.
func (c RedisConfig) Mode() string {
	switch {
	case c.SentinelMaster != "" || len(c.SentinelAddrs) > 0:
		return RedisSentinel
	case c.Cluster:
		return RedisCluster
	default:
		return RedisStandalone
	}
}

// Validate reports every inconsistency of c; the errors wrap
// ErrInvalidOption.
func (c RedisConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: redis: "+format, append([]any{ErrInvalidOption}, args...)...))
	}
	noEmpty := func(what string, addrs []string) {
		for i, a := range addrs {
			if a == "" {
				bad("%s[%d] is empty", what, i)
			}
		}
	}
	switch c.Mode() {
	case RedisSentinel:
		if c.SentinelMaster == "" {
			bad("a sentinel master name is required with sentinel addresses")
		}
		if len(c.SentinelAddrs) == 0 {
			bad("sentinel master %q needs at least one sentinel address", c.SentinelMaster)
		}
		if c.Cluster {
			bad("Sentinel and Cluster are exclusive")
		}
		if len(c.Addrs) > 0 {
			bad("with Sentinel the primary is found by the sentinels; give no addresses (got %d)", len(c.Addrs))
		}
		if len(c.Replicas) > 0 {
			bad("with Sentinel the replicas are found by the sentinels; give no replica addresses (got %d)", len(c.Replicas))
		}
		noEmpty("sentinel address", c.SentinelAddrs)
	case RedisCluster:
		if len(c.Addrs) == 0 {
			bad("a Cluster needs at least one seed address")
		}
		if len(c.Replicas) > 0 {
			bad("a Cluster finds its replicas itself; give no replica addresses (got %d)", len(c.Replicas))
		}
		noEmpty("address", c.Addrs)
	default:
		if len(c.Addrs) != 1 {
			bad("a standalone Redis takes exactly one primary address (got %d; several seed nodes need Cluster)", len(c.Addrs))
		}
		noEmpty("address", c.Addrs)
		noEmpty("replica address", c.Replicas)
	}
	if c.DialerRetries < 0 {
		bad("DialerRetries %d is negative", c.DialerRetries)
	}
	return errors.Join(errs...)
}

// RedisClients are the clients NewClients builds. Close closes them.
type RedisClients struct {
	// Primary takes writes and every read that must not lag: a
	// *redis.Client (standalone, or through Sentinel) or a
	// *redis.ClusterClient. The Client's change-stream tails read it, or a
	// standalone replica (WithReplicaTail).
	Primary redis.UniversalClient
	// Replicas serve reads that may lag, tried before Primary: one client
	// per listed replica (standalone); one cluster client with ReadOnly and
	// RouteRandomly (Cluster); one client to a replica the sentinels list,
	// at random, or the primary when there is none (Sentinel).
	Replicas []redis.UniversalClient
}

// Close closes every client.
func (rc *RedisClients) Close() error {
	var errs []error
	for _, c := range rc.all() {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (rc *RedisClients) all() []redis.UniversalClient {
	return append([]redis.UniversalClient{rc.Primary}, rc.Replicas...)
}

// NewClient validates c and builds the primary client only, for writers
// (which read their own writes and so never read replicas). The caller
// closes it.
func (c RedisConfig) NewClient() (redis.UniversalClient, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c.primary(), nil
}

// NewClients validates c and builds the primary client and the read clients
// (see RedisClients). No connection is made yet. The caller closes them.
func (c RedisConfig) NewClients() (*RedisClients, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rc := &RedisClients{Primary: c.primary()}
	switch c.Mode() {
	case RedisSentinel:
		o := c.failoverOptions()
		o.ReplicaOnly = true
		rc.Replicas = append(rc.Replicas, redis.NewFailoverClient(o))
	case RedisCluster:
		o := c.clusterOptions()
		o.ReadOnly, o.RouteRandomly = true, true
		rc.Replicas = append(rc.Replicas, redis.NewClusterClient(o))
	default:
		for _, a := range c.Replicas {
			rc.Replicas = append(rc.Replicas, redis.NewClient(c.options(a)))
		}
	}
	return rc, nil
}

func (c RedisConfig) primary() redis.UniversalClient {
	switch c.Mode() {
	case RedisSentinel:
		return redis.NewFailoverClient(c.failoverOptions())
	case RedisCluster:
		return redis.NewClusterClient(c.clusterOptions())
	default:
		return redis.NewClient(c.options(c.Addrs[0]))
	}
}

// Every client built here has ContextTimeoutEnabled: go-redis otherwise
// ignores a context's deadline for socket reads and writes, and a call to a
// Redis that hangs (stopped, or a half-open connection) would wait for the
// client's own ReadTimeout whatever the caller's deadline.
func (c RedisConfig) options(addr string) *redis.Options {
	return &redis.Options{
		Addr: addr, Username: c.Username, Password: c.Password, TLSConfig: c.TLS,
		DialerRetries: c.DialerRetries, ContextTimeoutEnabled: true,
	}
}

func (c RedisConfig) clusterOptions() *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs: c.Addrs, Username: c.Username, Password: c.Password, TLSConfig: c.TLS,
		DialerRetries: c.DialerRetries, ContextTimeoutEnabled: true,
	}
}

func (c RedisConfig) failoverOptions() *redis.FailoverOptions {
	return &redis.FailoverOptions{
		MasterName: c.SentinelMaster, SentinelAddrs: c.SentinelAddrs,
		SentinelUsername: c.SentinelUsername, SentinelPassword: c.SentinelPassword,
		Username: c.Username, Password: c.Password, TLSConfig: c.TLS,
		DialerRetries: c.DialerRetries, ContextTimeoutEnabled: true,
	}
}

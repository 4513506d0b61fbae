package integration_test

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestRedisConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      distcache.RedisConfig
		wantMode string
		wantErr  string // "" for valid
	}{
		{name: "standalone", cfg: distcache.RedisConfig{Addrs: []string{"p:6379"}}, wantMode: distcache.RedisStandalone},
		{name: "standalone with replicas", cfg: distcache.RedisConfig{Addrs: []string{"p:6379"}, Replicas: []string{"r1:6379", "r2:6379"}}, wantMode: distcache.RedisStandalone},
		{name: "cluster", cfg: distcache.RedisConfig{Addrs: []string{"a:1", "b:2"}, Cluster: true}, wantMode: distcache.RedisCluster},
		{name: "sentinel", cfg: distcache.RedisConfig{SentinelMaster: "m", SentinelAddrs: []string{"s:26379"}}, wantMode: distcache.RedisSentinel},
		{name: "nothing", cfg: distcache.RedisConfig{}, wantMode: distcache.RedisStandalone, wantErr: "exactly one primary address"},
		{name: "two standalone primaries", cfg: distcache.RedisConfig{Addrs: []string{"a:1", "b:2"}}, wantMode: distcache.RedisStandalone, wantErr: "need Cluster"},
		{name: "empty replica", cfg: distcache.RedisConfig{Addrs: []string{"p:1"}, Replicas: []string{""}}, wantMode: distcache.RedisStandalone, wantErr: "replica address[0] is empty"},
		{name: "cluster without seeds", cfg: distcache.RedisConfig{Cluster: true}, wantMode: distcache.RedisCluster, wantErr: "at least one seed"},
		{name: "cluster with replicas", cfg: distcache.RedisConfig{Addrs: []string{"a:1"}, Cluster: true, Replicas: []string{"r:1"}}, wantMode: distcache.RedisCluster, wantErr: "finds its replicas"},
		{name: "sentinel without master", cfg: distcache.RedisConfig{SentinelAddrs: []string{"s:26379"}}, wantMode: distcache.RedisSentinel, wantErr: "master name is required"},
		{name: "sentinel without sentinels", cfg: distcache.RedisConfig{SentinelMaster: "m"}, wantMode: distcache.RedisSentinel, wantErr: "at least one sentinel address"},
		{name: "sentinel with addrs", cfg: distcache.RedisConfig{SentinelMaster: "m", SentinelAddrs: []string{"s:1"}, Addrs: []string{"p:1"}}, wantMode: distcache.RedisSentinel, wantErr: "give no addresses"},
		{name: "sentinel and cluster", cfg: distcache.RedisConfig{SentinelMaster: "m", SentinelAddrs: []string{"s:1"}, Cluster: true}, wantMode: distcache.RedisSentinel, wantErr: "exclusive"},
		{name: "negative retries", cfg: distcache.RedisConfig{Addrs: []string{"p:1"}, DialerRetries: -1}, wantMode: distcache.RedisStandalone, wantErr: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.cfg.Mode(); got != tt.wantMode {
				t.Errorf("Mode() = %q, want %q", got, tt.wantMode)
			}
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, distcache.ErrInvalidOption) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an ErrInvalidOption saying %q", err, tt.wantErr)
			}
			if _, err := tt.cfg.NewClients(); !errors.Is(err, distcache.ErrInvalidOption) {
				t.Errorf("NewClients() = %v, want ErrInvalidOption", err)
			}
			if _, err := tt.cfg.NewClient(); !errors.Is(err, distcache.ErrInvalidOption) {
				t.Errorf("NewClient() = %v, want ErrInvalidOption", err)
			}
		})
	}
}

// NewClients picks the client type of each mode and carries the credentials
// and TLS settings to every client. No connection is made.
func TestRedisConfigNewClients(t *testing.T) {
	t.Parallel()
	tlsConf := &tls.Config{ServerName: "redis.internal", MinVersion: tls.VersionTLS12}
	auth := func(c distcache.RedisConfig) distcache.RedisConfig {
		c.Username, c.Password, c.TLS, c.DialerRetries = "edge", "pw", tlsConf, 2
		return c
	}
	tests := []struct {
		name         string
		cfg          distcache.RedisConfig
		wantCluster  bool
		wantReplicas int
		wantAddrs    []string // of the primary, then of each replica (standalone only)
	}{
		{name: "standalone", cfg: auth(distcache.RedisConfig{Addrs: []string{"p:6379"}}), wantAddrs: []string{"p:6379"}},
		{name: "standalone with replicas", cfg: auth(distcache.RedisConfig{Addrs: []string{"p:6379"}, Replicas: []string{"r1:6379", "r2:6379"}}),
			wantReplicas: 2, wantAddrs: []string{"p:6379", "r1:6379", "r2:6379"}},
		{name: "cluster", cfg: auth(distcache.RedisConfig{Addrs: []string{"a:1", "b:2"}, Cluster: true}), wantCluster: true, wantReplicas: 1},
		{name: "sentinel", cfg: auth(distcache.RedisConfig{SentinelMaster: "m", SentinelAddrs: []string{"s:26379"}}), wantReplicas: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc, err := tt.cfg.NewClients()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got := len(rc.Replicas); got != tt.wantReplicas {
				t.Fatalf("%d read clients, want %d", got, tt.wantReplicas)
			}
			for i, c := range append([]redis.UniversalClient{rc.Primary}, rc.Replicas...) {
				switch c := c.(type) {
				case *redis.ClusterClient:
					if !tt.wantCluster {
						t.Fatalf("client %d is a cluster client", i)
					}
					o := c.Options()
					if o.Username != "edge" || o.Password != "pw" || o.TLSConfig != tlsConf || o.DialerRetries != 2 {
						t.Errorf("client %d: options %+v lack the credentials, TLS or retries", i, o)
					}
					if readOnly := i > 0; o.ReadOnly != readOnly || o.RouteRandomly != readOnly {
						t.Errorf("client %d: ReadOnly %v RouteRandomly %v, want %v", i, o.ReadOnly, o.RouteRandomly, readOnly)
					}
				case *redis.Client:
					if tt.wantCluster {
						t.Fatalf("client %d is not a cluster client", i)
					}
					o := c.Options()
					if o.Username != "edge" || o.Password != "pw" || o.TLSConfig != tlsConf || o.DialerRetries != 2 {
						t.Errorf("client %d: options lack the credentials, TLS or retries", i)
					}
					if tt.wantAddrs != nil && o.Addr != tt.wantAddrs[i] {
						t.Errorf("client %d: Addr %q, want %q", i, o.Addr, tt.wantAddrs[i])
					}
				default:
					t.Fatalf("client %d: unexpected type %T", i, c)
				}
			}
			p, err := tt.cfg.NewClient()
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if _, isCluster := p.(*redis.ClusterClient); isCluster != tt.wantCluster {
				t.Errorf("NewClient: %T, cluster %v", p, tt.wantCluster)
			}
		})
	}
}

func TestNewRejectsBadRedisOptions(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	tests := []struct {
		name string
		opts []distcache.Option
		want string
	}{
		{"sentinel without sentinels", []distcache.Option{distcache.WithSentinel("mymaster")}, "at least one sentinel address"},
		{"sentinel without master", []distcache.Option{distcache.WithSentinel("", "127.0.0.1:26379")}, "master name is required"},
		{"sentinel and addrs", []distcache.Option{distcache.WithSentinel("m", "127.0.0.1:26379"), distcache.WithAddrs("127.0.0.1:1")}, "got 2: WithSentinel, WithAddrs"},
		{"sentinel and WithRedis", []distcache.Option{distcache.WithRedis(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})), distcache.WithSentinel("m", "127.0.0.1:26379")}, "got 2: WithRedis, WithSentinel"},
		{"empty primary", []distcache.Option{distcache.WithAddrs("")}, "address[0] is empty"},
		{"redis config of two primaries", []distcache.Option{distcache.WithRedisConfig(distcache.RedisConfig{Addrs: []string{"a:1", "b:1"}})}, "WithRedisConfig: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := distcache.New(ctx, tt.opts...)
			if !errors.Is(err, distcache.ErrInvalidOption) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an ErrInvalidOption saying %q", err, tt.want)
			}
		})
	}
}

// A Client built with WithSentinel finds the primary through a real
// sentinel, reads a miss and receives pushed updates; a Publisher on the
// clients RedisConfig.NewClients builds writes through the same path.
func TestSentinel(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	_, replica, sentinels := devstacktest.RedisSentinels(t, "edge-master", 1)
	sentinel := sentinels[0].Addr

	rc := distcache.RedisConfig{SentinelMaster: "edge-master", SentinelAddrs: []string{sentinel}}
	clients, err := rc.NewClients()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = clients.Close() })
	role, err := clients.Primary.Do(ctx, "ROLE").Slice()
	if err != nil || len(role) == 0 || role[0] != "master" {
		t.Fatalf("primary client's ROLE = %v, %v; want master", role, err)
	}
	replicaRole, err := clients.Replicas[0].Do(ctx, "ROLE").Slice()
	if err != nil || len(replicaRole) == 0 || replicaRole[0] != "slave" {
		t.Fatalf("read client's ROLE = %v, %v; want a replica (slave) at %s", replicaRole, err, replica.Addr)
	}

	proj := devstacktest.UniqueName(t, "sentinel")
	pub := newPublisher(t, clients.Primary)
	mustSet(t, pub, proj, 1, "k", 1)
	mustCutover(t, pub, proj, 1)

	c := newClient(t, distcache.WithSentinel("edge-master", sentinel), distcache.WithProjections(proj))
	devstacktest.Eventually(t, wait, func() bool {
		v, err := c.Get(ctx, proj, "k")
		return err == nil && string(v) == string(val("k", 1))
	}, "Get through the sentinel never saw k")
	mustSet(t, pub, proj, 1, "k", 2)
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, proj, "k")
		return err == nil && e.Version == 2
	}, "the pushed update never reached the client built with WithSentinel")
}

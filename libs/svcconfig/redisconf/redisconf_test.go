package redisconf_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/internal/tlstest"
	"github.com/distcache/distcache/libs/svcconfig/redisconf"
)

const (
	password         = "redis-pw-1234"
	sentinelPassword = "sentinel-pw-5678"
)

func load(env map[string]string, opts ...redisconf.Option) (redisconf.Config, error) {
	r := envconf.New("SVC", func(k string) string { return env[k] })
	c := redisconf.Load(r, opts...)
	return c, r.Err()
}

func env(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestLoadValid(t *testing.T) {
	t.Parallel()
	f := tlstest.Write(t)
	tests := []struct {
		name         string
		env          map[string]string
		opts         []redisconf.Option
		want         distcache.RedisConfig // compared without TLS
		wantTLS      bool
		wantCluster  bool // of the primary client
		wantReadClis int
	}{
		{name: "standalone", env: env("SVC_REDIS_ADDRS", "p:6379"),
			want: distcache.RedisConfig{Addrs: []string{"p:6379"}}},
		{name: "standalone with ACL user and TLS", env: env("SVC_REDIS_ADDRS", "p:6379", "SVC_REDIS_USERNAME", "svc", "SVC_REDIS_PASSWORD", password,
			"SVC_REDIS_TLS", "true", "SVC_REDIS_TLS_CA_FILE", f.CA, "SVC_REDIS_TLS_CERT_FILE", f.Cert, "SVC_REDIS_TLS_KEY_FILE", f.Key),
			want: distcache.RedisConfig{Addrs: []string{"p:6379"}, Username: "svc", Password: password}, wantTLS: true},
		{name: "replicas for a reader", env: env("SVC_REDIS_ADDRS", "p:6379", "SVC_REDIS_REPLICAS", "r1:6379,r2:6379"), opts: []redisconf.Option{redisconf.WithReplicaReads()},
			want: distcache.RedisConfig{Addrs: []string{"p:6379"}, Replicas: []string{"r1:6379", "r2:6379"}}, wantReadClis: 2},
		{name: "cluster from several addresses", env: env("SVC_REDIS_ADDRS", "a:1, b:2 ,c:3"),
			want: distcache.RedisConfig{Addrs: []string{"a:1", "b:2", "c:3"}, Cluster: true}, wantCluster: true, wantReadClis: 1},
		{name: "cluster from one seed", env: env("SVC_REDIS_ADDRS", "a:1", "SVC_REDIS_CLUSTER", "true"),
			want: distcache.RedisConfig{Addrs: []string{"a:1"}, Cluster: true}, wantCluster: true, wantReadClis: 1},
		{name: "sentinel", env: env("SVC_REDIS_SENTINEL_MASTER", "mymaster", "SVC_REDIS_SENTINEL_ADDRS", "s1:26379,s2:26379",
			"SVC_REDIS_SENTINEL_USERNAME", "watcher", "SVC_REDIS_SENTINEL_PASSWORD", sentinelPassword, "SVC_REDIS_PASSWORD", password),
			want: distcache.RedisConfig{SentinelMaster: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379"}, SentinelUsername: "watcher",
				SentinelPassword: sentinelPassword, Password: password}, wantReadClis: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := c.RedisConfig()
			if err != nil {
				t.Fatal(err)
			}
			if (rc.TLS != nil) != tt.wantTLS {
				t.Errorf("TLS config %v, want one: %v", rc.TLS, tt.wantTLS)
			}
			if tt.wantTLS && len(rc.TLS.Certificates) != 1 {
				t.Errorf("the client certificate did not reach the TLS config")
			}
			rc.TLS = nil
			if got, want := rc, tt.want; !equal(got, want) {
				t.Errorf("RedisConfig() = %+v, want %+v", got, want)
			}
			clients, err := c.NewClients()
			if err != nil {
				t.Fatal(err)
			}
			defer clients.Close()
			if _, isCluster := clients.Primary.(*redis.ClusterClient); isCluster != tt.wantCluster {
				t.Errorf("primary %T, want a cluster client: %v", clients.Primary, tt.wantCluster)
			}
			if len(clients.Replicas) != tt.wantReadClis {
				t.Errorf("%d read clients, want %d", len(clients.Replicas), tt.wantReadClis)
			}
			p, err := c.NewClient()
			if err != nil {
				t.Fatal(err)
			}
			p.Close()
		})
	}
}

func equal(a, b distcache.RedisConfig) bool {
	return strings.Join(a.Addrs, ",") == strings.Join(b.Addrs, ",") && strings.Join(a.Replicas, ",") == strings.Join(b.Replicas, ",") &&
		a.Cluster == b.Cluster && a.SentinelMaster == b.SentinelMaster && strings.Join(a.SentinelAddrs, ",") == strings.Join(b.SentinelAddrs, ",") &&
		a.SentinelUsername == b.SentinelUsername && a.SentinelPassword == b.SentinelPassword && a.Username == b.Username && a.Password == b.Password
}

func TestLoadInvalidNamesTheVariable(t *testing.T) {
	t.Parallel()
	f := tlstest.Write(t)
	tests := []struct {
		name    string
		env     map[string]string
		opts    []redisconf.Option
		wantVar string
		wantMsg string
	}{
		{name: "nothing", env: env(), wantVar: "SVC_REDIS_ADDRS", wantMsg: "required"},
		{name: "not host:port", env: env("SVC_REDIS_ADDRS", "redis"), wantVar: "SVC_REDIS_ADDRS", wantMsg: "host:port"},
		{name: "several without cluster", env: env("SVC_REDIS_ADDRS", "a:1,b:2", "SVC_REDIS_CLUSTER", "false"), wantVar: "SVC_REDIS_CLUSTER", wantMsg: "lists 2 addresses"},
		{name: "bad cluster bool", env: env("SVC_REDIS_ADDRS", "a:1", "SVC_REDIS_CLUSTER", "yes please"), wantVar: "SVC_REDIS_CLUSTER", wantMsg: "boolean"},
		{name: "replicas for a writer", env: env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_REPLICAS", "r:1"), wantVar: "SVC_REDIS_REPLICAS", wantMsg: "never from replicas"},
		{name: "replicas of a cluster", env: env("SVC_REDIS_ADDRS", "a:1,b:2", "SVC_REDIS_REPLICAS", "r:1"), opts: []redisconf.Option{redisconf.WithReplicaReads()}, wantVar: "SVC_REDIS_REPLICAS", wantMsg: "Cluster finds"},
		{name: "bad replica", env: env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_REPLICAS", "r"), opts: []redisconf.Option{redisconf.WithReplicaReads()}, wantVar: "SVC_REDIS_REPLICAS", wantMsg: "host:port"},
		{name: "sentinel without master", env: env("SVC_REDIS_SENTINEL_ADDRS", "s:26379"), wantVar: "SVC_REDIS_SENTINEL_MASTER", wantMsg: "required"},
		{name: "sentinel without sentinels", env: env("SVC_REDIS_SENTINEL_MASTER", "m"), wantVar: "SVC_REDIS_SENTINEL_ADDRS", wantMsg: "required"},
		{name: "sentinel with addrs", env: env("SVC_REDIS_SENTINEL_MASTER", "m", "SVC_REDIS_SENTINEL_ADDRS", "s:26379", "SVC_REDIS_ADDRS", "p:1"), wantVar: "SVC_REDIS_ADDRS", wantMsg: "must be empty"},
		{name: "sentinel and cluster", env: env("SVC_REDIS_SENTINEL_MASTER", "m", "SVC_REDIS_SENTINEL_ADDRS", "s:26379", "SVC_REDIS_CLUSTER", "true"), wantVar: "SVC_REDIS_CLUSTER", wantMsg: "exclusive"},
		{name: "bad sentinel address", env: env("SVC_REDIS_SENTINEL_MASTER", "m", "SVC_REDIS_SENTINEL_ADDRS", "sentinel"), wantVar: "SVC_REDIS_SENTINEL_ADDRS", wantMsg: "host:port"},
		{name: "sentinel password without sentinel", env: env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_SENTINEL_PASSWORD", sentinelPassword), wantVar: "SVC_REDIS_SENTINEL_PASSWORD", wantMsg: "SVC_REDIS_SENTINEL_MASTER is not"},
		{name: "CA without TLS", env: env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_TLS_CA_FILE", f.CA), wantVar: "SVC_REDIS_TLS_CA_FILE", wantMsg: "SVC_REDIS_TLS is not true"},
		{name: "CA not PEM", env: env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_TLS", "true", "SVC_REDIS_TLS_CA_FILE", f.NotPEM), wantVar: "SVC_REDIS_TLS_CA_FILE", wantMsg: "no PEM"},
		{name: "cert without key", env: env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_TLS", "true", "SVC_REDIS_TLS_CERT_FILE", f.Cert), wantVar: "SVC_REDIS_TLS_CERT_FILE", wantMsg: "together"},
		{name: "bad TLS bool", env: env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_TLS", "maybe"), wantVar: "SVC_REDIS_TLS", wantMsg: "boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.env["SVC_REDIS_PASSWORD"] = password
			_, err := load(tt.env, tt.opts...)
			if !errors.Is(err, envconf.ErrInvalid) {
				t.Fatalf("Load: %v, want ErrInvalid", err)
			}
			found := false
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ve *envconf.VarError
				if errors.As(e, &ve) && ve.Var == tt.wantVar && strings.Contains(ve.Reason, tt.wantMsg) {
					found = true
				}
			}
			if !found {
				t.Errorf("Load: %v, want an error for %s saying %q", err, tt.wantVar, tt.wantMsg)
			}
			for _, secret := range []string{password, sentinelPassword} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error shows a password: %v", err)
				}
			}
		})
	}
}

func TestLogValueMasksPasswords(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"standalone", env("SVC_REDIS_ADDRS", "p:6379", "SVC_REDIS_USERNAME", "svc-user", "SVC_REDIS_PASSWORD", password),
			[]string{"standalone", "p:6379", "svc-user", envconf.Masked}},
		{"sentinel", env("SVC_REDIS_SENTINEL_MASTER", "mymaster", "SVC_REDIS_SENTINEL_ADDRS", "s1:26379", "SVC_REDIS_SENTINEL_PASSWORD", sentinelPassword, "SVC_REDIS_PASSWORD", password),
			[]string{"sentinel", "mymaster", "s1:26379", envconf.Masked}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "redis", c)
			out := buf.String()
			for _, secret := range []string{password, sentinelPassword} {
				if strings.Contains(out, secret) {
					t.Errorf("log shows a password: %s", out)
				}
			}
			for _, want := range tt.want {
				if !strings.Contains(out, want) {
					t.Errorf("log lacks %q: %s", want, out)
				}
			}
		})
	}
}

// TestAllowEviction: the start-up eviction-policy check is on unless the variable says otherwise,
// and a non-boolean value names the variable.
func TestAllowEviction(t *testing.T) {
	t.Parallel()
	c, err := load(env("SVC_REDIS_ADDRS", "p:1"))
	if err != nil || c.AllowEviction {
		t.Fatalf("default: AllowEviction = %v, err %v; want false", c.AllowEviction, err)
	}
	c, err = load(env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_ALLOW_EVICTION", "true"))
	if err != nil || !c.AllowEviction {
		t.Fatalf("SVC_REDIS_ALLOW_EVICTION=true: AllowEviction = %v, err %v", c.AllowEviction, err)
	}
	if _, err := load(env("SVC_REDIS_ADDRS", "p:1", "SVC_REDIS_ALLOW_EVICTION", "maybe")); err == nil || !strings.Contains(err.Error(), "SVC_REDIS_ALLOW_EVICTION") {
		t.Fatalf("SVC_REDIS_ALLOW_EVICTION=maybe: err %v, want one naming the variable", err)
	}
}

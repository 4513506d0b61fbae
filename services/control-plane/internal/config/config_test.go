package config

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/distcache"
)

const tok = "secret-token-0123456789"

// The Redis connection's variables are redisconf's, under the service's prefix.
const (
	envRedisAddrs    = "CONTROLPLANE_REDIS_ADDRS"
	envRedisPassword = "CONTROLPLANE_REDIS_PASSWORD"
	envRedisTLS      = "CONTROLPLANE_REDIS_TLS"
)

func base() map[string]string {
	return map[string]string{
		EnvDatabaseURL:      "postgres://cp:dbpass@127.0.0.1:5432/registry",
		EnvModels:           "users=id,email,status;orgs=id,slug",
		envRedisAddrs:       "127.0.0.1:6379",
		EnvTemporalHostPort: "127.0.0.1:7233",
		EnvTokens:           tok,
	}
}

func load(env map[string]string, files map[string]string) (Config, error) {
	return FromEnv(func(k string) string { return env[k] }, func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	})
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := load(base(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPCAddr != "127.0.0.1:58090" || c.HTTPAddr != "127.0.0.1:58091" || c.Temporal.Namespace != "default" ||
		c.RetireGrace != 10*time.Minute || c.TopicPrefix != "distcache" || c.MaxLag != 0 || len(c.Tokens) != 1 {
		t.Errorf("defaults = %+v", c)
	}
	if got := c.Models["users"]; len(got) != 3 || got[1] != "email" {
		t.Errorf("models = %v", c.Models)
	}
}

func TestInvalidValuesNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		set     map[string]string
		unset   []string
		wantVar string
	}{
		{name: "no database", unset: []string{EnvDatabaseURL}, wantVar: EnvDatabaseURL},
		{name: "bad database", set: map[string]string{EnvDatabaseURL: "postgres://a b:@@/"}, wantVar: EnvDatabaseURL},
		{name: "no models", unset: []string{EnvModels}, wantVar: EnvModels},
		{name: "bad models", set: map[string]string{EnvModels: "users=id,e-mail"}, wantVar: EnvModels},
		{name: "no redis", unset: []string{envRedisAddrs}, wantVar: envRedisAddrs},
		{name: "bad redis", set: map[string]string{envRedisAddrs: "localhost"}, wantVar: envRedisAddrs},
		{name: "bad redis tls", set: map[string]string{envRedisTLS: "maybe"}, wantVar: envRedisTLS},
		{name: "redis replicas", set: map[string]string{"CONTROLPLANE_REDIS_REPLICAS": "127.0.0.1:6380"}, wantVar: "CONTROLPLANE_REDIS_REPLICAS"},
		{name: "redis client certificate without key", set: map[string]string{envRedisTLS: "true", "CONTROLPLANE_REDIS_TLS_CERT_FILE": "/etc/hostname"}, wantVar: "CONTROLPLANE_REDIS_TLS_CERT_FILE"},
		{name: "redis sentinel with addrs", set: map[string]string{"CONTROLPLANE_REDIS_SENTINEL_MASTER": "m", "CONTROLPLANE_REDIS_SENTINEL_ADDRS": "127.0.0.1:26379"}, wantVar: envRedisAddrs},
		{name: "bad log format", set: map[string]string{EnvLogFormat: "xml"}, wantVar: EnvLogFormat},
		{name: "no temporal", unset: []string{EnvTemporalHostPort}, wantVar: EnvTemporalHostPort},
		{name: "bad ui url", set: map[string]string{EnvTemporalUIURL: "ftp://x"}, wantVar: EnvTemporalUIURL},
		{name: "temporal api key without tls", set: map[string]string{"CONTROLPLANE_TEMPORAL_API_KEY": "k"}, wantVar: "CONTROLPLANE_TEMPORAL_API_KEY"},
		{name: "tls cert without key", set: map[string]string{EnvTLSCertFile: "/etc/hostname"}, wantVar: EnvTLSCertFile},
		{name: "client CA without tls", set: map[string]string{EnvTLSClientCAFile: "/etc/hostname"}, wantVar: EnvTLSClientCAFile},
		{name: "bad grpc addr", set: map[string]string{EnvGRPCAddr: "58090"}, wantVar: EnvGRPCAddr},
		{name: "bad http addr", set: map[string]string{EnvHTTPAddr: "x:y"}, wantVar: EnvHTTPAddr},
		{name: "bad pprof addr", set: map[string]string{EnvPprofAddr: "6060"}, wantVar: EnvPprofAddr},
		{name: "no tokens", unset: []string{EnvTokens}, wantVar: EnvTokens},
		{name: "short token", set: map[string]string{EnvTokens: "tiny1"}, wantVar: EnvTokens},
		{name: "missing token file", set: map[string]string{EnvTokensFile: "/nope"}, wantVar: EnvTokensFile},
		{name: "bad grace", set: map[string]string{EnvRetireGrace: "soon"}, wantVar: EnvRetireGrace},
		{name: "negative grace", set: map[string]string{EnvRetireGrace: "-1s"}, wantVar: EnvRetireGrace},
		{name: "bad max lag", set: map[string]string{EnvMaxLag: "-5"}, wantVar: EnvMaxLag},
		{name: "bad topic prefix", set: map[string]string{EnvTopicPrefix: "a/b"}, wantVar: EnvTopicPrefix},
		{name: "bad log level", set: map[string]string{EnvLogLevel: "loud"}, wantVar: EnvLogLevel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := base()
			for _, k := range tt.unset {
				delete(env, k)
			}
			for k, v := range tt.set {
				env[k] = v
			}
			_, err := load(env, nil)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			var ve *VarError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), tt.wantVar) {
				t.Fatalf("error %q does not name %s", err, tt.wantVar)
			}
			for _, secret := range []string{"dbpass", tok, "tiny1"} {
				if strings.Contains(err.Error(), secret) && tt.name != "bad database" {
					t.Errorf("error %q leaks %q", err, secret)
				}
			}
		})
	}
}

func TestTokensFromFile(t *testing.T) {
	t.Parallel()
	env := base()
	delete(env, EnvTokens)
	env[EnvTokensFile] = "/etc/tokens"
	c, err := load(env, map[string]string{"/etc/tokens": "# ops\nfirst-token-0123456789\n\nsecond-token-0123456789\r\n"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Tokens) != 2 || c.Tokens[0] != "first-token-0123456789" || c.Tokens[1] != "second-token-0123456789" {
		t.Errorf("tokens = %d read, want the 2 of the file", len(c.Tokens))
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	env := base()
	env[envRedisPassword] = "redispass"
	env["CONTROLPLANE_REDIS_USERNAME"] = "cp-user"
	env[EnvCoreDatabaseURL] = "postgres://core:corepass@127.0.0.1/core"
	c, err := load(env, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	out := buf.String()
	for _, secret := range []string{"dbpass", "redispass", "corepass", tok} {
		if strings.Contains(out, secret) {
			t.Errorf("logged config leaks %q: %s", secret, out)
		}
	}
	for _, want := range []string{`"tokens":1`, `"password":"****"`, `"username":"cp-user"`, "127.0.0.1:5432/registry", `"models":["orgs","users"]`} {
		if !strings.Contains(out, want) {
			t.Errorf("logged config lacks %s: %s", want, out)
		}
	}
}

// The Redis connection takes the forms redisconf reads: Sentinel (with an ACL user and a
// sentinel password) and a Cluster, as well as the standalone primary of base.
func TestRedisModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		set  map[string]string
		want string
	}{
		{"standalone", nil, distcache.RedisStandalone},
		{"cluster", map[string]string{envRedisAddrs: "10.0.0.1:6379,10.0.0.2:6379"}, distcache.RedisCluster},
		{"sentinel", map[string]string{envRedisAddrs: "", "CONTROLPLANE_REDIS_SENTINEL_MASTER": "distcache",
			"CONTROLPLANE_REDIS_SENTINEL_ADDRS": "10.0.0.1:26379,10.0.0.2:26379", "CONTROLPLANE_REDIS_SENTINEL_PASSWORD": "sentpass",
			"CONTROLPLANE_REDIS_USERNAME": "cp", envRedisPassword: "redispass"}, distcache.RedisSentinel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := base()
			for k, v := range tt.set {
				env[k] = v
			}
			c, err := load(env, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Redis.Mode(); got != tt.want {
				t.Errorf("Redis.Mode() = %q, want %q", got, tt.want)
			}
			rdb, err := c.Redis.NewClient()
			if err != nil {
				t.Fatal(err)
			}
			rdb.Close()
		})
	}
}

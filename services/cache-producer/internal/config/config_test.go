package config

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func valid() map[string]string {
	return map[string]string{
		"PRODUCER_DATABASE_URL":  "postgres://u:secretpw@db:5432/cp",
		"PRODUCER_REDIS_ADDRS":   "redis:6379",
		"PRODUCER_KAFKA_BROKERS": "k1:9092,k2:9092",
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"HTTPAddr", c.HTTPAddr, DefaultHTTPAddr},
		{"TopicPrefix", c.TopicPrefix, "distcache"},
		{"BatchSize", c.BatchSize, 5000},
		{"BackfillBatchSize", c.BackfillBatchSize, 5000},
		{"TemporalNamespace", c.Temporal.Namespace, "default"},
		{"Redis.Cluster", c.Redis.Cluster, false},
		{"Redis.Addrs", strings.Join(c.Redis.Addrs, ","), "redis:6379"},
		{"Kafka.Brokers", strings.Join(c.Kafka.Brokers, ","), "k1:9092,k2:9092"},
		{"Kafka.ClientID", c.Kafka.ClientID, DefaultKafkaClientID},
		{"ReloadInterval", c.ReloadInterval, 30 * time.Second},
		{"StatusReport", c.StatusReport, 2 * time.Second},
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"Migrate", c.Migrate, false},
		{"IndexLayout", c.IndexLayout, "log1"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		set     map[string]string
		unset   []string
		wantVar string
	}{
		{name: "no database", unset: []string{"PRODUCER_DATABASE_URL"}, wantVar: "PRODUCER_DATABASE_URL"},
		{name: "database not postgres", set: map[string]string{"PRODUCER_DATABASE_URL": "mysql://x"}, wantVar: "PRODUCER_DATABASE_URL"},
		{name: "no redis", unset: []string{"PRODUCER_REDIS_ADDRS"}, wantVar: "PRODUCER_REDIS_ADDRS"},
		{name: "redis not host:port", set: map[string]string{"PRODUCER_REDIS_ADDRS": "redis"}, wantVar: "PRODUCER_REDIS_ADDRS"},
		{name: "pprof addr not host:port", set: map[string]string{EnvPprofAddr: "6060"}, wantVar: EnvPprofAddr},
		{name: "two redis without cluster", set: map[string]string{"PRODUCER_REDIS_ADDRS": "a:1,b:2", "PRODUCER_REDIS_CLUSTER": "false"}, wantVar: "PRODUCER_REDIS_CLUSTER"},
		{name: "redis replicas", set: map[string]string{"PRODUCER_REDIS_REPLICAS": "r:6379"}, wantVar: "PRODUCER_REDIS_REPLICAS"},
		{name: "redis sentinel without sentinels", unset: []string{"PRODUCER_REDIS_ADDRS"}, set: map[string]string{"PRODUCER_REDIS_SENTINEL_MASTER": "m"}, wantVar: "PRODUCER_REDIS_SENTINEL_ADDRS"},
		{name: "no brokers", unset: []string{"PRODUCER_KAFKA_BROKERS"}, wantVar: "PRODUCER_KAFKA_BROKERS"},
		{name: "batch zero", set: map[string]string{"PRODUCER_BATCH_SIZE": "0"}, wantVar: "PRODUCER_BATCH_SIZE"},
		{name: "batch text", set: map[string]string{"PRODUCER_BATCH_SIZE": "many"}, wantVar: "PRODUCER_BATCH_SIZE"},
		{name: "bad sasl", set: map[string]string{"PRODUCER_KAFKA_SASL_MECHANISM": "GSSAPI"}, wantVar: "PRODUCER_KAFKA_SASL_MECHANISM"},
		{name: "sasl without user", set: map[string]string{"PRODUCER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}, wantVar: "PRODUCER_KAFKA_SASL_USERNAME"},
		{name: "sasl PLAIN without TLS", set: map[string]string{"PRODUCER_KAFKA_SASL_MECHANISM": "PLAIN", "PRODUCER_KAFKA_SASL_USERNAME": "u", "PRODUCER_KAFKA_SASL_PASSWORD": "p"}, wantVar: "PRODUCER_KAFKA_SASL_ALLOW_PLAINTEXT"},
		{name: "password without mechanism", set: map[string]string{"PRODUCER_KAFKA_SASL_PASSWORD": "x"}, wantVar: "PRODUCER_KAFKA_SASL_MECHANISM"},
		{name: "bad bool", set: map[string]string{"PRODUCER_REDIS_TLS": "yes please"}, wantVar: "PRODUCER_REDIS_TLS"},
		{name: "bad prefix", set: map[string]string{"PRODUCER_TOPIC_PREFIX": "a b"}, wantVar: "PRODUCER_TOPIC_PREFIX"},
		{name: "bad temporal", set: map[string]string{"PRODUCER_TEMPORAL_HOSTPORT": "temporal"}, wantVar: "PRODUCER_TEMPORAL_HOSTPORT"},
		{name: "bad http", set: map[string]string{"PRODUCER_HTTP_ADDR": "58082"}, wantVar: "PRODUCER_HTTP_ADDR"},
		{name: "bad duration", set: map[string]string{"PRODUCER_RELOAD_INTERVAL": "1ms"}, wantVar: "PRODUCER_RELOAD_INTERVAL"},
		{name: "bad level", set: map[string]string{"PRODUCER_LOG_LEVEL": "loud"}, wantVar: "PRODUCER_LOG_LEVEL"},
		{name: "ca without tls", set: map[string]string{"PRODUCER_KAFKA_TLS_CA_FILE": "/ca.pem"}, wantVar: "PRODUCER_KAFKA_TLS_CA_FILE"},
		{name: "redis ca without tls", set: map[string]string{"PRODUCER_REDIS_TLS_CA_FILE": "/ca.pem"}, wantVar: "PRODUCER_REDIS_TLS_CA_FILE"},
		{name: "bad log format", set: map[string]string{"PRODUCER_LOG_FORMAT": "xml"}, wantVar: "PRODUCER_LOG_FORMAT"},
		{name: "bad index layout", set: map[string]string{"PRODUCER_INDEX_LAYOUT": "btree"}, wantVar: "PRODUCER_INDEX_LAYOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := valid()
			for k, v := range tt.set {
				m[k] = v
			}
			for _, k := range tt.unset {
				delete(m, k)
			}
			_, err := Load(env(m))
			if err == nil {
				t.Fatalf("Load accepted %v", tt.set)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.wantVar) {
				t.Errorf("error %q does not name %s", err, tt.wantVar)
			}
		})
	}
}

func TestClusterFromSeveralAddrs(t *testing.T) {
	t.Parallel()
	m := valid()
	m["PRODUCER_REDIS_ADDRS"] = "a:1, b:2 ,c:3"
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Redis.Cluster || len(c.Redis.Addrs) != 3 {
		t.Errorf("cluster = %v, addrs = %q; want a 3-node cluster", c.Redis.Cluster, c.Redis.Addrs)
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	m := valid()
	m["PRODUCER_REDIS_PASSWORD"] = "redispw"
	m["PRODUCER_KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"
	m["PRODUCER_KAFKA_SASL_USERNAME"] = "svc"
	m["PRODUCER_KAFKA_SASL_PASSWORD"] = "kafkapw"
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("cfg", "config", c)
	out := b.String()
	for _, secret := range []string{"secretpw", "redispw", "kafkapw"} {
		if strings.Contains(out, secret) {
			t.Errorf("log shows secret %q: %s", secret, out)
		}
	}
	if !strings.Contains(out, "svc") || !strings.Contains(out, "db:5432") {
		t.Errorf("log lacks non-secret values: %s", out)
	}
	if _, err := c.Kafka.Opts(); err != nil {
		t.Errorf("Kafka.Opts: %v", err)
	}
	rdb, err := c.Redis.NewClient()
	if err != nil {
		t.Fatalf("Redis.NewClient: %v", err)
	}
	rdb.Close()
}

// Package config reads the cache-producer's configuration from environment
// variables, applies defaults, validates it (an error names the variable) and
// builds the Redis and Kafka client options from it. LogValue masks secrets.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
)

// ErrInvalid is wrapped by every configuration error.
var ErrInvalid = errors.New("invalid configuration")

// Defaults.
const (
	DefaultHTTPAddr          = "127.0.0.1:58082"
	DefaultTopicPrefix       = "distcache"
	DefaultTemporalNamespace = "default"
	DefaultBatchSize         = 5000
	DefaultBackfillBatchSize = 5000
	DefaultReloadInterval    = 30 * time.Second
	DefaultShutdownTimeout   = 15 * time.Second
)

// Config is the service's configuration.
type Config struct {
	DatabaseURL string // PRODUCER_DATABASE_URL (required): the registry
	Migrate     bool   // PRODUCER_MIGRATE: apply migrations at start (default false)

	RedisAddrs         []string // PRODUCER_REDIS_ADDR (required), comma-separated
	RedisCluster       bool     // PRODUCER_REDIS_CLUSTER (default: true when several addresses)
	RedisUsername      string   // PRODUCER_REDIS_USERNAME
	RedisPassword      string   // PRODUCER_REDIS_PASSWORD (secret)
	RedisTLS           bool     // PRODUCER_REDIS_TLS
	RedisTLSCAFile     string   // PRODUCER_REDIS_TLS_CA_FILE
	RedisTLSSkipVerify bool     // PRODUCER_REDIS_TLS_INSECURE_SKIP_VERIFY

	KafkaBrokers       []string // PRODUCER_KAFKA_BROKERS (required), comma-separated
	KafkaSASLMechanism string   // PRODUCER_KAFKA_SASL_MECHANISM: "", PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	KafkaSASLUsername  string   // PRODUCER_KAFKA_SASL_USERNAME
	KafkaSASLPassword  string   // PRODUCER_KAFKA_SASL_PASSWORD (secret)
	KafkaTLS           bool     // PRODUCER_KAFKA_TLS
	KafkaTLSCAFile     string   // PRODUCER_KAFKA_TLS_CA_FILE
	KafkaClientID      string   // PRODUCER_KAFKA_CLIENT_ID (default distcache-cache-producer)
	TopicPrefix        string   // PRODUCER_TOPIC_PREFIX (default distcache)

	TemporalHostPort  string // PRODUCER_TEMPORAL_HOSTPORT; empty: no activity worker
	TemporalNamespace string // PRODUCER_TEMPORAL_NAMESPACE (default "default")

	HTTPAddr string // PRODUCER_HTTP_ADDR (default 127.0.0.1:58082)

	BatchSize         int           // PRODUCER_BATCH_SIZE (default 5000, 1..100000)
	BackfillBatchSize int           // PRODUCER_BACKFILL_BATCH_SIZE (default 5000, 1..100000)
	StreamMaxLen      int64         // PRODUCER_STREAM_MAX_LEN (default distcache.DefaultStreamMaxLen)
	TombstoneTTL      time.Duration // PRODUCER_TOMBSTONE_TTL (default distcache.DefaultTombstoneTTL)
	DeadLetterMaxLen  int64         // PRODUCER_DEAD_LETTER_MAX_LEN (default 10000)
	IndexCacheEntries int           // PRODUCER_INDEX_CACHE_ENTRIES (default 1000000 per generation, 0 disables)
	ReloadInterval    time.Duration // PRODUCER_RELOAD_INTERVAL (default 30s)
	ShutdownTimeout   time.Duration // PRODUCER_SHUTDOWN_TIMEOUT (default 15s)

	LogLevel  slog.Level // PRODUCER_LOG_LEVEL: debug, info, warn, error (default info)
	LogFormat string     // PRODUCER_LOG_FORMAT: json or text (default json)
}

// Load reads the configuration through getenv.
func Load(getenv func(string) string) (Config, error) {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, name, fmt.Sprintf(format, args...)))
	}
	str := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	boolean := func(name string, def bool) bool {
		v := str(name, "")
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(name, "%q is not a boolean (true/false)", v)
		}
		return b
	}
	integer := func(name string, def, lo, hi int64) int64 {
		v := str(name, "")
		if v == "" {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < lo || n > hi {
			bad(name, "%q is not an integer in [%d, %d]", v, lo, hi)
			return def
		}
		return n
	}
	duration := func(name string, def, lo time.Duration) time.Duration {
		v := str(name, "")
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < lo {
			bad(name, "%q is not a duration >= %v (e.g. 30s)", v, lo)
			return def
		}
		return d
	}
	list := func(name string) []string {
		var out []string
		for _, p := range strings.Split(getenv(name), ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}

	c := Config{
		DatabaseURL:        str("PRODUCER_DATABASE_URL", ""),
		Migrate:            boolean("PRODUCER_MIGRATE", false),
		RedisAddrs:         list("PRODUCER_REDIS_ADDR"),
		RedisUsername:      str("PRODUCER_REDIS_USERNAME", ""),
		RedisPassword:      getenv("PRODUCER_REDIS_PASSWORD"),
		RedisTLS:           boolean("PRODUCER_REDIS_TLS", false),
		RedisTLSCAFile:     str("PRODUCER_REDIS_TLS_CA_FILE", ""),
		RedisTLSSkipVerify: boolean("PRODUCER_REDIS_TLS_INSECURE_SKIP_VERIFY", false),
		KafkaBrokers:       list("PRODUCER_KAFKA_BROKERS"),
		KafkaSASLMechanism: strings.ToUpper(str("PRODUCER_KAFKA_SASL_MECHANISM", "")),
		KafkaSASLUsername:  str("PRODUCER_KAFKA_SASL_USERNAME", ""),
		KafkaSASLPassword:  getenv("PRODUCER_KAFKA_SASL_PASSWORD"),
		KafkaTLS:           boolean("PRODUCER_KAFKA_TLS", false),
		KafkaTLSCAFile:     str("PRODUCER_KAFKA_TLS_CA_FILE", ""),
		KafkaClientID:      str("PRODUCER_KAFKA_CLIENT_ID", "distcache-cache-producer"),
		TopicPrefix:        str("PRODUCER_TOPIC_PREFIX", DefaultTopicPrefix),
		TemporalHostPort:   str("PRODUCER_TEMPORAL_HOSTPORT", ""),
		TemporalNamespace:  str("PRODUCER_TEMPORAL_NAMESPACE", DefaultTemporalNamespace),
		HTTPAddr:           str("PRODUCER_HTTP_ADDR", DefaultHTTPAddr),
		BatchSize:          int(integer("PRODUCER_BATCH_SIZE", DefaultBatchSize, 1, 100_000)),
		BackfillBatchSize:  int(integer("PRODUCER_BACKFILL_BATCH_SIZE", DefaultBackfillBatchSize, 1, 100_000)),
		StreamMaxLen:       integer("PRODUCER_STREAM_MAX_LEN", distcache.DefaultStreamMaxLen, 0, 1<<40),
		TombstoneTTL:       duration("PRODUCER_TOMBSTONE_TTL", distcache.DefaultTombstoneTTL, time.Second),
		DeadLetterMaxLen:   integer("PRODUCER_DEAD_LETTER_MAX_LEN", 10_000, 1, 1<<40),
		IndexCacheEntries:  int(integer("PRODUCER_INDEX_CACHE_ENTRIES", 1_000_000, 0, 1<<31)),
		ReloadInterval:     duration("PRODUCER_RELOAD_INTERVAL", DefaultReloadInterval, 100*time.Millisecond),
		ShutdownTimeout:    duration("PRODUCER_SHUTDOWN_TIMEOUT", DefaultShutdownTimeout, time.Second),
		LogFormat:          strings.ToLower(str("PRODUCER_LOG_FORMAT", "json")),
	}
	c.RedisCluster = boolean("PRODUCER_REDIS_CLUSTER", len(c.RedisAddrs) > 1)

	if c.DatabaseURL == "" {
		bad("PRODUCER_DATABASE_URL", "is required (the control-plane registry, postgres://...)")
	} else if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("PRODUCER_DATABASE_URL", "must be a postgres:// or postgresql:// URL")
	}
	if len(c.RedisAddrs) == 0 {
		bad("PRODUCER_REDIS_ADDR", "is required (host:port, comma-separated for a cluster)")
	}
	for _, a := range c.RedisAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("PRODUCER_REDIS_ADDR", "%q is not host:port", a)
		}
	}
	if len(c.RedisAddrs) > 1 && !c.RedisCluster {
		bad("PRODUCER_REDIS_CLUSTER", "is false but PRODUCER_REDIS_ADDR lists %d addresses (only a cluster takes several)", len(c.RedisAddrs))
	}
	if len(c.KafkaBrokers) == 0 {
		bad("PRODUCER_KAFKA_BROKERS", "is required (host:port, comma-separated)")
	}
	for _, a := range c.KafkaBrokers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("PRODUCER_KAFKA_BROKERS", "%q is not host:port", a)
		}
	}
	switch c.KafkaSASLMechanism {
	case "":
		if c.KafkaSASLUsername != "" || c.KafkaSASLPassword != "" {
			bad("PRODUCER_KAFKA_SASL_MECHANISM", "is required when a SASL username or password is set (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.KafkaSASLUsername == "" {
			bad("PRODUCER_KAFKA_SASL_USERNAME", "is required with PRODUCER_KAFKA_SASL_MECHANISM=%s", c.KafkaSASLMechanism)
		}
	default:
		bad("PRODUCER_KAFKA_SASL_MECHANISM", "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", c.KafkaSASLMechanism)
	}
	if c.RedisTLSCAFile != "" && !c.RedisTLS {
		bad("PRODUCER_REDIS_TLS_CA_FILE", "is set but PRODUCER_REDIS_TLS is false")
	}
	if c.KafkaTLSCAFile != "" && !c.KafkaTLS {
		bad("PRODUCER_KAFKA_TLS_CA_FILE", "is set but PRODUCER_KAFKA_TLS is false")
	}
	if err := events.ValidateTopicPrefix(c.TopicPrefix); err != nil {
		bad("PRODUCER_TOPIC_PREFIX", "%v", err)
	}
	if c.TemporalHostPort != "" {
		if _, _, err := net.SplitHostPort(c.TemporalHostPort); err != nil {
			bad("PRODUCER_TEMPORAL_HOSTPORT", "%q is not host:port", c.TemporalHostPort)
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("PRODUCER_HTTP_ADDR", "%q is not host:port", c.HTTPAddr)
	}
	switch lv := strings.ToLower(str("PRODUCER_LOG_LEVEL", "info")); lv {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		bad("PRODUCER_LOG_LEVEL", "%q is not one of debug, info, warn, error", lv)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("PRODUCER_LOG_FORMAT", "%q is not json or text", c.LogFormat)
	}
	return c, errors.Join(errs...)
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "*****"
}

// maskURL hides the password of a database URL.
func maskURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "*****"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "*****")
		}
	}
	return u.String()
}

// LogValue logs the configuration with its secrets masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("database_url", maskURL(c.DatabaseURL)),
		slog.Bool("migrate", c.Migrate),
		slog.Any("redis_addrs", c.RedisAddrs),
		slog.Bool("redis_cluster", c.RedisCluster),
		slog.String("redis_username", c.RedisUsername),
		slog.String("redis_password", mask(c.RedisPassword)),
		slog.Bool("redis_tls", c.RedisTLS),
		slog.Any("kafka_brokers", c.KafkaBrokers),
		slog.String("kafka_sasl_mechanism", c.KafkaSASLMechanism),
		slog.String("kafka_sasl_username", c.KafkaSASLUsername),
		slog.String("kafka_sasl_password", mask(c.KafkaSASLPassword)),
		slog.Bool("kafka_tls", c.KafkaTLS),
		slog.String("topic_prefix", c.TopicPrefix),
		slog.String("temporal_hostport", c.TemporalHostPort),
		slog.String("temporal_namespace", c.TemporalNamespace),
		slog.String("http_addr", c.HTTPAddr),
		slog.Int("batch_size", c.BatchSize),
		slog.Int("backfill_batch_size", c.BackfillBatchSize),
		slog.Int("index_cache_entries", c.IndexCacheEntries),
		slog.Int64("stream_max_len", c.StreamMaxLen),
		slog.Duration("tombstone_ttl", c.TombstoneTTL),
		slog.Duration("reload_interval", c.ReloadInterval),
	)
}

func tlsConfig(name, caFile string, skipVerify bool) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify} //nolint:gosec // opt-in by the operator
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: %s: no PEM certificate in %s", ErrInvalid, name, caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// RedisClient builds the Redis client: a *redis.ClusterClient when
// RedisCluster, else a *redis.Client.
func (c Config) RedisClient() (redis.UniversalClient, error) {
	var tc *tls.Config
	if c.RedisTLS {
		var err error
		if tc, err = tlsConfig("PRODUCER_REDIS_TLS_CA_FILE", c.RedisTLSCAFile, c.RedisTLSSkipVerify); err != nil {
			return nil, err
		}
	}
	if c.RedisCluster {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.RedisAddrs, Username: c.RedisUsername, Password: c.RedisPassword, TLSConfig: tc,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr: c.RedisAddrs[0], Username: c.RedisUsername, Password: c.RedisPassword, TLSConfig: tc,
	}), nil
}

// KafkaOpts builds the base Kafka client options (brokers, client id, TLS,
// SASL).
func (c Config) KafkaOpts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(c.KafkaBrokers...), kgo.ClientID(c.KafkaClientID)}
	if c.KafkaTLS {
		tc, err := tlsConfig("PRODUCER_KAFKA_TLS_CA_FILE", c.KafkaTLSCAFile, false)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch c.KafkaSASLMechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: c.KafkaSASLUsername, Pass: c.KafkaSASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.KafkaSASLUsername, Pass: c.KafkaSASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.KafkaSASLUsername, Pass: c.KafkaSASLPassword}.AsSha512Mechanism()))
	}
	return opts, nil
}

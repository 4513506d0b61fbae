// Package config reads the cache-producer's configuration from PRODUCER_*
// environment variables through libs/svcconfig: the Redis connection is
// redisconf's and the Kafka connection kafkaconf's (the same variables and
// rules as every service's), the rest is read here with envconf. It applies
// defaults and validates everything at once (each error names its variable);
// LogValue masks secrets.
package config

import (
	"log/slog"
	"os"
	"time"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/kafkaconf"
	"github.com/distcache/distcache/libs/svcconfig/pgconf"
	"github.com/distcache/distcache/libs/svcconfig/redisconf"
	"github.com/distcache/distcache/libs/svcconfig/temporalconf"
)

// Prefix starts every variable of the service.
const Prefix = "PRODUCER"

// Environment variable names. The Redis connection is read by redisconf
// (PRODUCER_REDIS_ADDRS, _REDIS_CLUSTER, _REDIS_SENTINEL_*, _REDIS_USERNAME,
// _REDIS_PASSWORD, _REDIS_TLS*) and the Kafka connection by kafkaconf
// (PRODUCER_KAFKA_BROKERS, _KAFKA_CLIENT_ID, _KAFKA_TLS*, _KAFKA_SASL_*).
const (
	EnvDatabaseURL       = "PRODUCER_DATABASE_URL"
	EnvMigrate           = "PRODUCER_MIGRATE"
	EnvTopicPrefix       = "PRODUCER_TOPIC_PREFIX"
	EnvTemporalHostPort  = "PRODUCER_TEMPORAL_HOSTPORT"  // read by temporalconf
	EnvTemporalNamespace = "PRODUCER_TEMPORAL_NAMESPACE" // read by temporalconf
	EnvHTTPAddr          = "PRODUCER_HTTP_ADDR"
	EnvPprofAddr         = "PRODUCER_PPROF_ADDR"
	EnvBatchSize         = "PRODUCER_BATCH_SIZE"
	EnvBackfillBatchSize = "PRODUCER_BACKFILL_BATCH_SIZE"
	EnvStreamMaxLen      = "PRODUCER_STREAM_MAX_LEN"
	EnvTombstoneTTL      = "PRODUCER_TOMBSTONE_TTL"
	EnvDeadLetterMaxLen  = "PRODUCER_DEAD_LETTER_MAX_LEN"
	EnvIndexCacheEntries = "PRODUCER_INDEX_CACHE_ENTRIES"
	EnvIndexLayout       = "PRODUCER_INDEX_LAYOUT"
	EnvReloadInterval    = "PRODUCER_RELOAD_INTERVAL"
	EnvStatusReport      = "PRODUCER_STATUS_REPORT_INTERVAL"
	EnvShutdownTimeout   = "PRODUCER_SHUTDOWN_TIMEOUT"
	EnvLogLevel          = "PRODUCER_LOG_LEVEL"
	EnvLogFormat         = "PRODUCER_LOG_FORMAT"

	EnvReplicaName           = "PRODUCER_REPLICA_NAME"
	EnvGroupID               = "PRODUCER_GROUP_ID"
	EnvGroupSessionTimeout   = "PRODUCER_GROUP_SESSION_TIMEOUT"
	EnvGroupHeartbeat        = "PRODUCER_GROUP_HEARTBEAT_INTERVAL"
	EnvGroupRebalanceTimeout = "PRODUCER_GROUP_REBALANCE_TIMEOUT"
)

// ErrInvalid is matched (errors.Is) by every configuration error; each is an
// *envconf.VarError naming the variable.
var ErrInvalid = envconf.ErrInvalid

// Defaults.
const (
	DefaultHTTPAddr          = "127.0.0.1:58082"
	DefaultTopicPrefix       = "distcache"
	DefaultTemporalNamespace = temporalconf.DefaultNamespace
	DefaultBatchSize         = 5000
	DefaultBackfillBatchSize = 5000
	DefaultDeadLetterMaxLen  = 10_000
	DefaultIndexCacheEntries = 1_000_000
	DefaultReloadInterval    = 30 * time.Second
	DefaultStatusReport      = 2 * time.Second
	DefaultShutdownTimeout   = 15 * time.Second
	DefaultKafkaClientID     = "distcache-cache-producer"
	DefaultGroupID           = "distcache-cache-producer"
	// DefaultGroupSessionTimeout is how long the broker waits for a replica's heartbeat
	// before its topics go to the others (a kill -9 is taken over within about this).
	DefaultGroupSessionTimeout   = 10 * time.Second
	DefaultGroupHeartbeat        = time.Second
	DefaultGroupRebalanceTimeout = 30 * time.Second
)

// Config is the service's configuration.
type Config struct {
	DatabaseURL string // PRODUCER_DATABASE_URL (required): the registry
	Migrate     bool   // PRODUCER_MIGRATE: apply migrations at start (default false)

	// Redis is the connection the projections are written through
	// (PRODUCER_REDIS_*): a standalone primary, a Cluster, or a primary found
	// through Sentinel. Read replicas are refused: the producer reads its own
	// writes.
	Redis redisconf.Config
	// Kafka is the broker connection (PRODUCER_KAFKA_*).
	Kafka       kafkaconf.Config
	TopicPrefix string // PRODUCER_TOPIC_PREFIX (default distcache)

	// Temporal is the Temporal connection (PRODUCER_TEMPORAL_*: host:port, namespace, TLS, mutual
	// TLS, API key; see temporalconf); an empty HostPort runs no activity worker.
	Temporal temporalconf.Config

	HTTPAddr string // PRODUCER_HTTP_ADDR (default 127.0.0.1:58082)
	// PprofAddr, when set, serves net/http/pprof on a listener of its own (PRODUCER_PPROF_ADDR;
	// default empty: off). Never the HTTP_ADDR.
	PprofAddr string

	BatchSize         int           // PRODUCER_BATCH_SIZE (default 5000, 1..100000)
	BackfillBatchSize int           // PRODUCER_BACKFILL_BATCH_SIZE (default 5000, 1..100000)
	StreamMaxLen      int64         // PRODUCER_STREAM_MAX_LEN (default distcache.DefaultStreamMaxLen)
	TombstoneTTL      time.Duration // PRODUCER_TOMBSTONE_TTL (default distcache.DefaultTombstoneTTL)
	DeadLetterMaxLen  int64         // PRODUCER_DEAD_LETTER_MAX_LEN (default 10000)
	IndexCacheEntries int           // PRODUCER_INDEX_CACHE_ENTRIES (default 1000000 over all generations, 0 disables)
	IndexLayout       string        // PRODUCER_INDEX_LAYOUT: index layout of the generations this producer creates on a single node, log1 (default) or hash16
	ReloadInterval    time.Duration // PRODUCER_RELOAD_INTERVAL (default 30s)
	ShutdownTimeout   time.Duration // PRODUCER_SHUTDOWN_TIMEOUT (default 15s)

	// StatusReport is how often the consumers' status (owner, position, newest change, dead
	// letters) is written to the registry for GetStatus (PRODUCER_STATUS_REPORT_INTERVAL, default
	// 2s, at least 100ms; the control-plane calls a report older than a few intervals stale).
	StatusReport time.Duration

	// ReplicaName names this replica in status reports and in the writer
	// claim it stores per generation (PRODUCER_REPLICA_NAME; default the host
	// name, which is the pod name on Kubernetes).
	ReplicaName string
	// Group is the Kafka consumer group the replicas share the topics through
	// (assignment only: offsets stay in Redis).
	Group GroupConfig

	LogLevel  slog.Level // PRODUCER_LOG_LEVEL: debug, info, warn, error (default info)
	LogFormat string     // PRODUCER_LOG_FORMAT: json or text (default json)
}

// GroupConfig configures the consumer group the replicas share the topics
// through.
type GroupConfig struct {
	ID                string        // PRODUCER_GROUP_ID (default distcache-cache-producer)
	SessionTimeout    time.Duration // PRODUCER_GROUP_SESSION_TIMEOUT (default 10s, 1s..5m)
	HeartbeatInterval time.Duration // PRODUCER_GROUP_HEARTBEAT_INTERVAL (default 1s; below the session timeout)
	RebalanceTimeout  time.Duration // PRODUCER_GROUP_REBALANCE_TIMEOUT (default 30s): how long a replica may take to hand over a revoked topic
}

// Load reads the configuration through getenv (os.Getenv in production; a
// map lookup in tests) and validates it. The error joins one
// *envconf.VarError per refused variable.
func Load(getenv func(string) string) (Config, error) {
	r := envconf.New(Prefix, getenv)
	c := Config{
		DatabaseURL:       pgconf.URL(r, EnvDatabaseURL, true, "the control-plane registry, postgres://..."),
		Migrate:           r.Bool(EnvMigrate, false),
		Redis:             redisconf.Load(r),
		Kafka:             kafkaconf.Load(r, DefaultKafkaClientID),
		TopicPrefix:       r.String(EnvTopicPrefix, DefaultTopicPrefix),
		Temporal:          temporalconf.Load(r),
		HTTPAddr:          r.HostPort(EnvHTTPAddr, DefaultHTTPAddr),
		PprofAddr:         r.HostPort(EnvPprofAddr, ""),
		BatchSize:         r.Int(EnvBatchSize, DefaultBatchSize, 1, 100_000),
		BackfillBatchSize: r.Int(EnvBackfillBatchSize, DefaultBackfillBatchSize, 1, 100_000),
		StreamMaxLen:      r.Int64(EnvStreamMaxLen, distcache.DefaultStreamMaxLen, 0, 1<<40),
		TombstoneTTL:      r.Duration(EnvTombstoneTTL, distcache.DefaultTombstoneTTL, time.Second),
		DeadLetterMaxLen:  r.Int64(EnvDeadLetterMaxLen, DefaultDeadLetterMaxLen, 1, 1<<40),
		IndexCacheEntries: r.Int(EnvIndexCacheEntries, DefaultIndexCacheEntries, 0, 1<<31),
		IndexLayout:       r.OneOf(EnvIndexLayout, "log1", "log1", "hash16"),
		ReloadInterval:    r.Duration(EnvReloadInterval, DefaultReloadInterval, 100*time.Millisecond),
		StatusReport:      r.Duration(EnvStatusReport, DefaultStatusReport, 100*time.Millisecond),
		ShutdownTimeout:   r.Duration(EnvShutdownTimeout, DefaultShutdownTimeout, time.Second),
		ReplicaName:       r.String(EnvReplicaName, defaultReplicaName()),
		Group: GroupConfig{
			ID:                r.String(EnvGroupID, DefaultGroupID),
			SessionTimeout:    r.Duration(EnvGroupSessionTimeout, DefaultGroupSessionTimeout, time.Second),
			HeartbeatInterval: r.Duration(EnvGroupHeartbeat, DefaultGroupHeartbeat, 100*time.Millisecond),
			RebalanceTimeout:  r.Duration(EnvGroupRebalanceTimeout, DefaultGroupRebalanceTimeout, time.Second),
		},
		LogLevel:  r.LogLevel(EnvLogLevel, slog.LevelInfo),
		LogFormat: r.OneOf(EnvLogFormat, "json", "json", "text"),
	}
	if c.Group.SessionTimeout > 5*time.Minute {
		r.Fail(EnvGroupSessionTimeout, "%s is over 5m", c.Group.SessionTimeout)
	}
	if c.Group.HeartbeatInterval >= c.Group.SessionTimeout {
		r.Fail(EnvGroupHeartbeat, "%s must be below %s (%s)", c.Group.HeartbeatInterval, EnvGroupSessionTimeout, c.Group.SessionTimeout)
	}
	if c.ReplicaName == "" {
		r.Fail(EnvReplicaName, "empty, and the host name is unknown")
	}
	if err := events.ValidateTopicPrefix(c.TopicPrefix); err != nil {
		r.Fail(EnvTopicPrefix, "%v", err)
	}
	return c, r.Err()
}

// defaultReplicaName is the host name (the pod name on Kubernetes), or ""
// when it is unknown.
func defaultReplicaName() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return h
}

// LogValue logs the configuration with its secrets masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("database_url", envconf.MaskURL(c.DatabaseURL)),
		slog.Bool("migrate", c.Migrate),
		slog.Any("redis", c.Redis),
		slog.Any("kafka", c.Kafka),
		slog.String("topic_prefix", c.TopicPrefix),
		slog.Any("temporal", c.Temporal),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("pprof_addr", c.PprofAddr),
		slog.Int("batch_size", c.BatchSize),
		slog.Int("backfill_batch_size", c.BackfillBatchSize),
		slog.Int("index_cache_entries", c.IndexCacheEntries),
		slog.String("index_layout", c.IndexLayout),
		slog.Int64("stream_max_len", c.StreamMaxLen),
		slog.Duration("tombstone_ttl", c.TombstoneTTL),
		slog.Int64("dead_letter_max_len", c.DeadLetterMaxLen),
		slog.Duration("reload_interval", c.ReloadInterval),
		slog.Duration("status_report_interval", c.StatusReport),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("replica_name", c.ReplicaName),
		slog.String("group_id", c.Group.ID),
		slog.Duration("group_session_timeout", c.Group.SessionTimeout),
		slog.Duration("group_heartbeat_interval", c.Group.HeartbeatInterval),
		slog.Duration("group_rebalance_timeout", c.Group.RebalanceTimeout),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("log_format", c.LogFormat),
	)
}

// Package config reads and validates the core-publisher's configuration from
// PUBLISHER_* environment variables, through libs/svcconfig: the Kafka
// connection is kafkaconf's (the same variables and rules as every service's),
// the rest is read here with envconf. Every invalid value is reported with the
// name of the variable at fault; secrets are masked when the configuration is
// logged.
package config

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/svcconfig/apitoken"
	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/kafkaconf"
	"github.com/distcache/distcache/libs/svcconfig/pgconf"
	"github.com/distcache/distcache/services/core-publisher/internal/backload"
	"github.com/distcache/distcache/services/core-publisher/internal/producer"
)

// Prefix starts every variable of the service.
const Prefix = "PUBLISHER"

// Environment variable names. The Kafka connection is read by kafkaconf
// under Prefix: PUBLISHER_KAFKA_BROKERS, _KAFKA_CLIENT_ID, _KAFKA_TLS,
// _KAFKA_TLS_CA_FILE, _KAFKA_TLS_CERT_FILE, _KAFKA_TLS_KEY_FILE,
// _KAFKA_TLS_INSECURE_SKIP_VERIFY, _KAFKA_SASL_MECHANISM,
// _KAFKA_SASL_USERNAME, _KAFKA_SASL_PASSWORD, _KAFKA_SASL_ALLOW_PLAINTEXT.
// The API's bearer tokens are read by apitoken: PUBLISHER_TOKENS,
// PUBLISHER_TOKENS_FILE and PUBLISHER_INSECURE_NO_AUTH.
const (
	EnvDatabaseURL         = "PUBLISHER_DATABASE_URL"
	EnvTopicPrefix         = "PUBLISHER_TOPIC_PREFIX"
	EnvReplicationFactor   = "PUBLISHER_REPLICATION_FACTOR"
	EnvHTTPAddr            = "PUBLISHER_HTTP_ADDR"
	EnvBatchSize           = "PUBLISHER_BATCH_SIZE"
	EnvPollInterval        = "PUBLISHER_POLL_INTERVAL"
	EnvLeaseRetryInterval  = "PUBLISHER_LEASE_RETRY_INTERVAL"
	EnvLinger              = "PUBLISHER_KAFKA_LINGER"
	EnvCompression         = "PUBLISHER_COMPRESSION"
	EnvPprofAddr           = "PUBLISHER_PPROF_ADDR"
	EnvShutdownTimeout     = "PUBLISHER_SHUTDOWN_TIMEOUT"
	EnvModels              = "PUBLISHER_MODELS"
	EnvAutoBackload        = "PUBLISHER_AUTO_BACKLOAD"
	EnvCommitFence         = "PUBLISHER_COMMIT_FENCE"
	EnvBackloadChunkSize   = "PUBLISHER_BACKLOAD_CHUNK_SIZE"
	EnvKafkaTransactions   = "PUBLISHER_KAFKA_TRANSACTIONS"
	EnvKafkaTxnID          = "PUBLISHER_KAFKA_TRANSACTIONAL_ID"
	EnvMaxEventBytes       = "PUBLISHER_MAX_EVENT_BYTES"
	EnvOutboxModels        = "PUBLISHER_OUTBOX_MODELS"
	EnvVersionCheck        = "PUBLISHER_VERSION_CHECK"
	EnvDeadLetterRetention = "PUBLISHER_DEAD_LETTER_RETENTION"
	EnvLogLevel            = "PUBLISHER_LOG_LEVEL"
	EnvLogFormat           = "PUBLISHER_LOG_FORMAT"
	EnvMigrate             = "PUBLISHER_MIGRATE"
	EnvTokens              = "PUBLISHER_TOKENS"           // read by apitoken
	EnvTokensFile          = "PUBLISHER_TOKENS_FILE"      // read by apitoken
	EnvInsecureNoAuth      = "PUBLISHER_INSECURE_NO_AUTH" // read by apitoken
)

// Defaults.
const (
	DefaultHTTPAddr            = "127.0.0.1:58081"
	DefaultReplicationFactor   = -1 // the broker's default.replication.factor
	DefaultBatchSize           = 2000
	DefaultPollInterval        = time.Second
	DefaultLeaseRetryInterval  = time.Second
	DefaultLinger              = 2 * time.Millisecond
	DefaultCompression         = producer.DefaultCompression
	DefaultShutdownTimeout     = 15 * time.Second
	DefaultBackloadChunkSize   = 1000
	DefaultKafkaClientID       = "distcache-core-publisher"
	DefaultMaxEventBytes       = events.DefaultMaxEventBytes
	DefaultDeadLetterRetention = 7 * 24 * time.Hour
	// MinMaxEventBytes and MaxMaxEventBytes bound PUBLISHER_MAX_EVENT_BYTES:
	// below 1 KiB hardly an event fits; the upper bound is the producer's
	// (its record batch limit stays well within franz-go's broker write
	// limit).
	MinMaxEventBytes = 1 << 10
	MaxMaxEventBytes = producer.MaxEventBytesLimit
)

// ErrInvalid is matched (errors.Is) by every configuration error; each is an
// *envconf.VarError naming the variable.
var ErrInvalid = envconf.ErrInvalid

// Model is a table the publisher can backload: rows of Table, keyed by
// KeyColumn, published as aggregate Aggregate.
type Model struct {
	Aggregate string
	Table     string // possibly schema-qualified: "public.users"
	KeyColumn string
	// Columns limits the published columns ("only:a|b", "except:a|b"; empty: all), as a
	// capture trigger's third argument does.
	Columns string
}

// Config is the whole service configuration.
type Config struct {
	DatabaseURL string // secret parts: the password
	// Kafka is the broker connection (PUBLISHER_KAFKA_*, see kafkaconf).
	Kafka kafkaconf.Config
	// KafkaTransactions: produce each batch in a Kafka transaction so the
	// broker fences a relay that lost its lease (default true).
	KafkaTransactions bool
	// KafkaTransactionalID overrides the derived
	// "distcache-publisher-<db>-<relay id>".
	KafkaTransactionalID string
	TopicPrefix          string
	ReplicationFactor    int
	HTTPAddr             string
	// API holds the bearer tokens of /v1/ (PUBLISHER_TOKENS, PUBLISHER_TOKENS_FILE), or says
	// that the API is open (PUBLISHER_INSECURE_NO_AUTH=true, no token).
	API                apitoken.Config
	BatchSize          int
	PollInterval       time.Duration
	LeaseRetryInterval time.Duration
	Linger             time.Duration
	// Compression is the codec of the record batches produced (PUBLISHER_COMPRESSION: none, lz4,
	// zstd, snappy, gzip; default lz4, see producer.DefaultCompression for the measurement).
	Compression string
	// PprofAddr, when set, serves net/http/pprof on a listener of its own at this address
	// (PUBLISHER_PPROF_ADDR; default empty: off). Never the API's address.
	PprofAddr       string
	ShutdownTimeout time.Duration
	// Models are extra backloadable models (PUBLISHER_MODELS) in addition to
	// every table the distcache_capture trigger is attached to.
	Models []Model
	// OutboxModels are models written to the outbox by events.OutboxWriter
	// only, with no table to backload (PUBLISHER_OUTBOX_MODELS). Rows of an
	// aggregate that is neither a capture-trigger table, nor in Models, nor
	// here are dead-lettered as of an unknown model.
	OutboxModels []string
	// VersionCheck: dead-letter a row whose version does not exceed its
	// key's published version (relay.WithVersionCheck). Default true; false
	// when the writer owns ordering.
	VersionCheck bool
	// DeadLetterRetention: dead letters older than this are deleted; 0
	// keeps them. Default 7 days.
	DeadLetterRetention time.Duration
	AutoBackload        bool
	BackloadChunkSize   int
	// CommitFence: read only rows older than every running transaction
	// (relay.WithCommitFence). Default true.
	CommitFence bool
	// MaxEventBytes is the largest event (events.Envelope.Size) published;
	// larger rows are dead-lettered. The producer's record batch limit and
	// the max.message.bytes of topics it creates follow from it
	// (producer.BatchMaxBytes). Default 1 MiB.
	MaxEventBytes int
	LogLevel      slog.Level
	LogJSON       bool
	// Migrate applies the core set of migrations to DatabaseURL at start
	// (PUBLISHER_MIGRATE, default false: the service only checks that they are applied).
	Migrate bool
}

// FromEnv reads the configuration with getenv (os.Getenv in production; a
// map lookup in tests) and validates it. The error joins one
// *envconf.VarError per refused variable.
func FromEnv(getenv func(string) string) (Config, error) {
	r := envconf.New(Prefix, getenv)
	c := Config{
		DatabaseURL:          pgconf.URL(r, EnvDatabaseURL, true, "a PostgreSQL URL such as postgres://user:pass@host:5432/db?sslmode=verify-full"),
		Kafka:                kafkaconf.Load(r, DefaultKafkaClientID),
		KafkaTransactions:    r.Bool(EnvKafkaTransactions, true),
		KafkaTransactionalID: r.String(EnvKafkaTxnID, ""),
		TopicPrefix:          r.String(EnvTopicPrefix, events.DefaultTopicPrefix),
		ReplicationFactor:    r.Int(EnvReplicationFactor, DefaultReplicationFactor, -1, 32767),
		HTTPAddr:             r.HostPort(EnvHTTPAddr, DefaultHTTPAddr),
		API:                  apitoken.Load(r, os.ReadFile, apitoken.AllowInsecure()),
		BatchSize:            r.Int(EnvBatchSize, DefaultBatchSize, 1, 100_000),
		BackloadChunkSize:    r.Int(EnvBackloadChunkSize, DefaultBackloadChunkSize, 1, 100_000),
		PollInterval:         r.Duration(EnvPollInterval, DefaultPollInterval, time.Millisecond),
		LeaseRetryInterval:   r.Duration(EnvLeaseRetryInterval, DefaultLeaseRetryInterval, time.Millisecond),
		Linger:               r.Duration(EnvLinger, DefaultLinger, 0),
		Compression:          r.OneOf(EnvCompression, DefaultCompression, producer.Compressions...),
		PprofAddr:            r.HostPort(EnvPprofAddr, ""),
		ShutdownTimeout:      r.Duration(EnvShutdownTimeout, DefaultShutdownTimeout, time.Millisecond),
		AutoBackload:         r.Bool(EnvAutoBackload, true),
		CommitFence:          r.Bool(EnvCommitFence, true),
		MaxEventBytes:        r.Int(EnvMaxEventBytes, DefaultMaxEventBytes, MinMaxEventBytes, MaxMaxEventBytes),
		VersionCheck:         r.Bool(EnvVersionCheck, true),
		DeadLetterRetention:  r.Duration(EnvDeadLetterRetention, DefaultDeadLetterRetention, 0),
		LogLevel:             r.LogLevel(EnvLogLevel, slog.LevelInfo),
		LogJSON:              r.OneOf(EnvLogFormat, "json", "json", "text") == "json",
		Migrate:              r.Bool(EnvMigrate, false),
	}
	for _, a := range r.List(EnvOutboxModels) {
		if err := events.ValidateAggregateName(a); err != nil {
			r.Fail(EnvOutboxModels, "%q: %v", a, err)
			continue
		}
		c.OutboxModels = append(c.OutboxModels, a)
	}
	if c.ReplicationFactor == 0 {
		r.Fail(EnvReplicationFactor, "0: want -1 (the broker's default) or 1..32767")
	}
	if err := events.ValidateTopicPrefix(c.TopicPrefix); err != nil {
		r.Fail(EnvTopicPrefix, "%v", err)
	}
	if v := r.String(EnvModels, ""); v != "" {
		ms, err := ParseModels(v)
		if err != nil {
			r.Fail(EnvModels, "%v", err)
		}
		c.Models = ms
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ParseModels parses PUBLISHER_MODELS: a comma-separated list of
// "table:keycolumn" (the aggregate is the table name without schema) or
// "aggregate=table:keycolumn", each optionally followed by a published-columns
// spec, ":only:<col>|<col>..." or ":except:<col>|<col>..." (see
// backload.Model.Columns).
func ParseModels(v string) ([]Model, error) {
	var out []Model
	seen := map[string]bool{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		var m Model
		rest := item
		if agg, r, ok := strings.Cut(item, "="); ok {
			m.Aggregate, rest = strings.TrimSpace(agg), r
		}
		table, col, ok := strings.Cut(rest, ":")
		col, spec, _ := strings.Cut(col, ":")
		m.Table, m.KeyColumn, m.Columns = strings.TrimSpace(table), strings.TrimSpace(col), strings.TrimSpace(spec)
		if !ok || m.Table == "" || m.KeyColumn == "" {
			return nil, fmt.Errorf("%q: want table:keycolumn or aggregate=table:keycolumn, optionally followed by :only:<col>|<col> or :except:<col>|<col>", item)
		}
		if err := backload.ValidateColumns(m.Columns); err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
		if m.Aggregate == "" {
			m.Aggregate = m.Table
			if i := strings.LastIndexByte(m.Table, '.'); i >= 0 {
				m.Aggregate = m.Table[i+1:]
			}
		}
		if err := events.ValidateAggregateName(m.Aggregate); err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
		if seen[m.Aggregate] {
			return nil, fmt.Errorf("aggregate %q listed twice", m.Aggregate)
		}
		seen[m.Aggregate] = true
		out = append(out, m)
	}
	return out, nil
}

// LogValue implements slog.LogValuer: the configuration with its secrets
// masked.
func (c Config) LogValue() slog.Value {
	models := make([]string, len(c.Models))
	for i, m := range c.Models {
		models[i] = m.Aggregate + "=" + m.Table + ":" + m.KeyColumn
		if m.Columns != "" {
			models[i] += ":" + m.Columns
		}
	}
	return slog.GroupValue(
		slog.String("database_url", envconf.MaskURL(c.DatabaseURL)),
		slog.Any("kafka", c.Kafka),
		slog.Bool("kafka_transactions", c.KafkaTransactions),
		slog.String("kafka_transactional_id", c.KafkaTransactionalID),
		slog.String("topic_prefix", c.TopicPrefix),
		slog.Int("replication_factor", c.ReplicationFactor),
		slog.String("http_addr", c.HTTPAddr),
		slog.Int("api_tokens", len(c.API.Tokens)),
		slog.Bool("api_insecure_no_auth", c.API.Insecure),
		slog.Int("batch_size", c.BatchSize),
		slog.Duration("poll_interval", c.PollInterval),
		slog.Duration("lease_retry_interval", c.LeaseRetryInterval),
		slog.Duration("linger", c.Linger),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Any("models", models),
		slog.Any("outbox_models", c.OutboxModels),
		slog.Bool("version_check", c.VersionCheck),
		slog.Duration("dead_letter_retention", c.DeadLetterRetention),
		slog.Bool("auto_backload", c.AutoBackload),
		slog.Bool("commit_fence", c.CommitFence),
		slog.Int("backload_chunk_size", c.BackloadChunkSize),
		slog.Int("max_event_bytes", c.MaxEventBytes),
		slog.Bool("migrate", c.Migrate),
		slog.String("log_level", c.LogLevel.String()),
	)
}

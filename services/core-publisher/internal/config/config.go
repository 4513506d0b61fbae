// Package config reads and validates the core-publisher's configuration from
// environment variables. Every invalid value is reported with the name of the
// variable at fault; secrets are masked when the configuration is logged.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/jackc/pgx/v5"
)

// Environment variable names.
const (
	EnvDatabaseURL        = "PUBLISHER_DATABASE_URL"
	EnvKafkaBrokers       = "PUBLISHER_KAFKA_BROKERS"
	EnvTopicPrefix        = "PUBLISHER_TOPIC_PREFIX"
	EnvReplicationFactor  = "PUBLISHER_REPLICATION_FACTOR"
	EnvHTTPAddr           = "PUBLISHER_HTTP_ADDR"
	EnvBatchSize          = "PUBLISHER_BATCH_SIZE"
	EnvPollInterval       = "PUBLISHER_POLL_INTERVAL"
	EnvLeaseRetryInterval = "PUBLISHER_LEASE_RETRY_INTERVAL"
	EnvLinger             = "PUBLISHER_KAFKA_LINGER"
	EnvShutdownTimeout    = "PUBLISHER_SHUTDOWN_TIMEOUT"
	EnvModels             = "PUBLISHER_MODELS"
	EnvAutoBackload       = "PUBLISHER_AUTO_BACKLOAD"
	EnvCommitFence        = "PUBLISHER_COMMIT_FENCE"
	EnvBackloadChunkSize  = "PUBLISHER_BACKLOAD_CHUNK_SIZE"
	EnvKafkaTransactions  = "PUBLISHER_KAFKA_TRANSACTIONS"
	EnvKafkaTxnID         = "PUBLISHER_KAFKA_TRANSACTIONAL_ID"
	EnvKafkaTLS           = "PUBLISHER_KAFKA_TLS"
	EnvKafkaTLSCAFile     = "PUBLISHER_KAFKA_TLS_CA_FILE"
	EnvKafkaTLSCertFile   = "PUBLISHER_KAFKA_TLS_CERT_FILE"
	EnvKafkaTLSKeyFile    = "PUBLISHER_KAFKA_TLS_KEY_FILE"
	EnvKafkaSASLMechanism = "PUBLISHER_KAFKA_SASL_MECHANISM"
	EnvKafkaSASLUser      = "PUBLISHER_KAFKA_SASL_USER"
	EnvKafkaSASLPassword  = "PUBLISHER_KAFKA_SASL_PASSWORD"
	EnvLogLevel           = "PUBLISHER_LOG_LEVEL"
	EnvLogFormat          = "PUBLISHER_LOG_FORMAT"
)

// Defaults.
const (
	DefaultHTTPAddr           = "127.0.0.1:58081"
	DefaultReplicationFactor  = -1 // the broker's default.replication.factor
	DefaultBatchSize          = 2000
	DefaultPollInterval       = time.Second
	DefaultLeaseRetryInterval = time.Second
	DefaultLinger             = 2 * time.Millisecond
	DefaultShutdownTimeout    = 15 * time.Second
	DefaultBackloadChunkSize  = 1000
)

// SASL mechanisms accepted in PUBLISHER_KAFKA_SASL_MECHANISM.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// ErrInvalid is matched (errors.Is) by every configuration error.
var ErrInvalid = errors.New("invalid configuration")

// VarError names the environment variable whose value is invalid.
type VarError struct {
	Var    string
	Reason string
}

func (e *VarError) Error() string { return e.Var + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *VarError) Is(target error) bool { return target == ErrInvalid }

// Model is a table the publisher can backload: rows of Table, keyed by
// KeyColumn, published as aggregate Aggregate.
type Model struct {
	Aggregate string
	Table     string // possibly schema-qualified: "public.users"
	KeyColumn string
}

// Kafka holds the broker connection settings.
type Kafka struct {
	Brokers []string
	// Transactions: produce each batch in a Kafka transaction so the broker
	// fences a relay that lost its lease (default true).
	Transactions bool
	// TransactionalID overrides the derived "distcache-publisher-<db>-<relay id>".
	TransactionalID string
	TLS             bool
	TLSCAFile       string
	TLSCertFile     string
	TLSKeyFile      string
	SASLMechanism   string // "" (none), SASLPlain, SASLScramSHA256 or SASLScramSHA512
	SASLUser        string
	SASLPassword    string // secret
}

// Config is the whole service configuration.
type Config struct {
	DatabaseURL        string // secret parts: the password
	Kafka              Kafka
	TopicPrefix        string
	ReplicationFactor  int
	HTTPAddr           string
	BatchSize          int
	PollInterval       time.Duration
	LeaseRetryInterval time.Duration
	Linger             time.Duration
	ShutdownTimeout    time.Duration
	// Models are extra backloadable models (PUBLISHER_MODELS) in addition to
	// every table the distcache_capture trigger is attached to.
	Models            []Model
	AutoBackload      bool
	BackloadChunkSize int
	// CommitFence: read only rows older than every running transaction
	// (relay.WithCommitFence). Default true.
	CommitFence bool
	LogLevel    slog.Level
	LogJSON     bool
}

// FromEnv reads the configuration with getenv (os.Getenv in production; a
// map lookup in tests) and validates it.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		TopicPrefix:        events.DefaultTopicPrefix,
		ReplicationFactor:  DefaultReplicationFactor,
		HTTPAddr:           DefaultHTTPAddr,
		BatchSize:          DefaultBatchSize,
		PollInterval:       DefaultPollInterval,
		LeaseRetryInterval: DefaultLeaseRetryInterval,
		Linger:             DefaultLinger,
		ShutdownTimeout:    DefaultShutdownTimeout,
		AutoBackload:       true,
		CommitFence:        true,
		BackloadChunkSize:  DefaultBackloadChunkSize,
		LogLevel:           slog.LevelInfo,
		LogJSON:            true,
		Kafka:              Kafka{Transactions: true},
	}
	var errs []error
	fail := func(name, format string, args ...any) {
		errs = append(errs, &VarError{Var: name, Reason: fmt.Sprintf(format, args...)})
	}

	c.DatabaseURL = strings.TrimSpace(getenv(EnvDatabaseURL))
	if c.DatabaseURL == "" {
		fail(EnvDatabaseURL, "required (a PostgreSQL URL such as postgres://user:pass@host:5432/db?sslmode=verify-full)")
	} else if _, err := pgx.ParseConfig(c.DatabaseURL); err != nil {
		// pgx's message may echo the URL; do not repeat the password.
		fail(EnvDatabaseURL, "not a valid PostgreSQL connection string (%s)", maskedParseError(err, c.DatabaseURL))
	}

	if v := strings.TrimSpace(getenv(EnvKafkaBrokers)); v == "" {
		fail(EnvKafkaBrokers, "required (comma-separated host:port list)")
	} else {
		for _, b := range strings.Split(v, ",") {
			b = strings.TrimSpace(b)
			if b == "" {
				continue
			}
			if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
				fail(EnvKafkaBrokers, "%q is not host:port", b)
				continue
			}
			c.Kafka.Brokers = append(c.Kafka.Brokers, b)
		}
		if len(c.Kafka.Brokers) == 0 {
			fail(EnvKafkaBrokers, "no broker in %q", v)
		}
	}

	if v := getenv(EnvTopicPrefix); v != "" {
		if err := events.ValidateTopicPrefix(v); err != nil {
			fail(EnvTopicPrefix, "%v", err)
		}
		c.TopicPrefix = v
	}
	intVar(getenv, EnvReplicationFactor, &c.ReplicationFactor, fail, func(n int) bool { return n == -1 || n >= 1 && n <= 32767 }, "-1 (broker default) or 1..32767")
	if v := getenv(EnvHTTPAddr); v != "" {
		if _, _, err := net.SplitHostPort(v); err != nil {
			fail(EnvHTTPAddr, "%q is not host:port", v)
		}
		c.HTTPAddr = v
	}
	intVar(getenv, EnvBatchSize, &c.BatchSize, fail, func(n int) bool { return n >= 1 && n <= 100000 }, "1..100000")
	intVar(getenv, EnvBackloadChunkSize, &c.BackloadChunkSize, fail, func(n int) bool { return n >= 1 && n <= 100000 }, "1..100000")
	durVar(getenv, EnvPollInterval, &c.PollInterval, fail, time.Millisecond)
	durVar(getenv, EnvLeaseRetryInterval, &c.LeaseRetryInterval, fail, time.Millisecond)
	durVar(getenv, EnvLinger, &c.Linger, fail, 0)
	durVar(getenv, EnvShutdownTimeout, &c.ShutdownTimeout, fail, time.Millisecond)
	boolVar(getenv, EnvAutoBackload, &c.AutoBackload, fail)
	boolVar(getenv, EnvCommitFence, &c.CommitFence, fail)

	if v := strings.TrimSpace(getenv(EnvModels)); v != "" {
		ms, err := ParseModels(v)
		if err != nil {
			fail(EnvModels, "%v", err)
		}
		c.Models = ms
	}

	boolVar(getenv, EnvKafkaTransactions, &c.Kafka.Transactions, fail)
	c.Kafka.TransactionalID = strings.TrimSpace(getenv(EnvKafkaTxnID))
	boolVar(getenv, EnvKafkaTLS, &c.Kafka.TLS, fail)
	c.Kafka.TLSCAFile = getenv(EnvKafkaTLSCAFile)
	c.Kafka.TLSCertFile = getenv(EnvKafkaTLSCertFile)
	c.Kafka.TLSKeyFile = getenv(EnvKafkaTLSKeyFile)
	for name, path := range map[string]string{EnvKafkaTLSCAFile: c.Kafka.TLSCAFile, EnvKafkaTLSCertFile: c.Kafka.TLSCertFile, EnvKafkaTLSKeyFile: c.Kafka.TLSKeyFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			fail(name, "cannot read %q: %v", path, err)
		}
		c.Kafka.TLS = true
	}
	if (c.Kafka.TLSCertFile == "") != (c.Kafka.TLSKeyFile == "") {
		fail(EnvKafkaTLSCertFile, "%s and %s must be set together", EnvKafkaTLSCertFile, EnvKafkaTLSKeyFile)
	}
	c.Kafka.SASLUser = getenv(EnvKafkaSASLUser)
	c.Kafka.SASLPassword = getenv(EnvKafkaSASLPassword)
	if v := strings.ToUpper(strings.TrimSpace(getenv(EnvKafkaSASLMechanism))); v != "" {
		switch v {
		case SASLPlain, SASLScramSHA256, SASLScramSHA512:
			c.Kafka.SASLMechanism = v
		default:
			fail(EnvKafkaSASLMechanism, "%q unknown (want %s, %s or %s)", v, SASLPlain, SASLScramSHA256, SASLScramSHA512)
		}
	} else if c.Kafka.SASLUser != "" {
		c.Kafka.SASLMechanism = SASLPlain
	}
	if c.Kafka.SASLMechanism != "" && (c.Kafka.SASLUser == "" || c.Kafka.SASLPassword == "") {
		fail(EnvKafkaSASLUser, "SASL needs both %s and %s", EnvKafkaSASLUser, EnvKafkaSASLPassword)
	}

	if v := getenv(EnvLogLevel); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			fail(EnvLogLevel, "%q is not debug, info, warn or error", v)
		}
	}
	switch v := strings.ToLower(getenv(EnvLogFormat)); v {
	case "", "json":
	case "text":
		c.LogJSON = false
	default:
		fail(EnvLogFormat, "%q is not json or text", v)
	}

	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ParseModels parses PUBLISHER_MODELS: a comma-separated list of
// "table:keycolumn" (the aggregate is the table name without schema) or
// "aggregate=table:keycolumn".
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
		m.Table, m.KeyColumn = strings.TrimSpace(table), strings.TrimSpace(col)
		if !ok || m.Table == "" || m.KeyColumn == "" {
			return nil, fmt.Errorf("%q: want table:keycolumn or aggregate=table:keycolumn", item)
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
	}
	return slog.GroupValue(
		slog.String("database_url", MaskURL(c.DatabaseURL)),
		slog.Any("kafka_brokers", c.Kafka.Brokers),
		slog.Bool("kafka_transactions", c.Kafka.Transactions),
		slog.String("kafka_transactional_id", c.Kafka.TransactionalID),
		slog.Bool("kafka_tls", c.Kafka.TLS),
		slog.String("kafka_sasl_mechanism", c.Kafka.SASLMechanism),
		slog.String("kafka_sasl_user", c.Kafka.SASLUser),
		slog.String("kafka_sasl_password", mask(c.Kafka.SASLPassword)),
		slog.String("topic_prefix", c.TopicPrefix),
		slog.Int("replication_factor", c.ReplicationFactor),
		slog.String("http_addr", c.HTTPAddr),
		slog.Int("batch_size", c.BatchSize),
		slog.Duration("poll_interval", c.PollInterval),
		slog.Duration("lease_retry_interval", c.LeaseRetryInterval),
		slog.Duration("linger", c.Linger),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Any("models", models),
		slog.Bool("auto_backload", c.AutoBackload),
		slog.Bool("commit_fence", c.CommitFence),
		slog.Int("backload_chunk_size", c.BackloadChunkSize),
	)
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "****"
}

// MaskURL returns a database URL (URL or key=value form) with its password
// replaced by "****".
func MaskURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "****")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "****")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// key=value form: mask password=...
	fields := strings.Fields(s)
	for i, f := range fields {
		if k, _, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "password") {
			fields[i] = k + "=****"
		}
	}
	return strings.Join(fields, " ")
}

func maskedParseError(err error, raw string) string {
	msg := err.Error()
	if u, perr := url.Parse(raw); perr == nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "****")
		}
	}
	return msg
}

func intVar(getenv func(string) string, name string, dst *int, fail func(string, string, ...any), ok func(int) bool, want string) {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || !ok(n) {
		fail(name, "%q: want an integer %s", v, want)
		return
	}
	*dst = n
}

func durVar(getenv func(string) string, name string, dst *time.Duration, fail func(string, string, ...any), min time.Duration) {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < min {
		fail(name, "%q: want a duration >= %s such as 500ms or 2s", v, min)
		return
	}
	*dst = d
}

func boolVar(getenv func(string) string, name string, dst *bool, fail func(string, string, ...any)) {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		fail(name, "%q: want true or false", v)
		return
	}
	*dst = b
}

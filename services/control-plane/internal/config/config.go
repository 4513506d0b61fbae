// Package config reads and validates the control-plane's configuration from CONTROLPLANE_*
// environment variables through libs/svcconfig: the Redis connection is redisconf's (the same
// variables and rules as every service's), the rest is read here with envconf. Every invalid
// value is reported with the name of the variable at fault; secrets (database passwords, the
// Redis passwords, API tokens) are masked when the configuration is logged.
package config

import (
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/svcconfig/apitoken"
	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/pgconf"
	"github.com/distcache/distcache/libs/svcconfig/redisconf"
	"github.com/distcache/distcache/libs/svcconfig/temporalconf"
	"github.com/distcache/distcache/libs/svcconfig/tlsconf"
	"github.com/distcache/distcache/services/control-plane/internal/modelcatalog"
)

// Prefix starts every variable of the service.
const Prefix = "CONTROLPLANE"

// Environment variable names. The Redis connection is read by redisconf
// under Prefix: CONTROLPLANE_REDIS_ADDRS, _REDIS_CLUSTER,
// _REDIS_SENTINEL_MASTER, _REDIS_SENTINEL_ADDRS, _REDIS_SENTINEL_USERNAME,
// _REDIS_SENTINEL_PASSWORD, _REDIS_USERNAME, _REDIS_PASSWORD, _REDIS_TLS,
// _REDIS_TLS_CA_FILE, _REDIS_TLS_CERT_FILE, _REDIS_TLS_KEY_FILE,
// _REDIS_TLS_INSECURE_SKIP_VERIFY.
const (
	EnvDatabaseURL       = "CONTROLPLANE_DATABASE_URL"
	EnvCoreDatabaseURL   = "CONTROLPLANE_CORE_DATABASE_URL"
	EnvModels            = "CONTROLPLANE_MODELS"
	EnvTemporalHostPort  = "CONTROLPLANE_TEMPORAL_HOSTPORT"  // read by temporalconf
	EnvTemporalNamespace = "CONTROLPLANE_TEMPORAL_NAMESPACE" // read by temporalconf
	EnvTLSCertFile       = "CONTROLPLANE_TLS_CERT_FILE"
	EnvTLSKeyFile        = "CONTROLPLANE_TLS_KEY_FILE"
	EnvTLSClientCAFile   = "CONTROLPLANE_TLS_CLIENT_CA_FILE"
	EnvTemporalUIURL     = "CONTROLPLANE_TEMPORAL_UI_URL"
	EnvGRPCAddr          = "CONTROLPLANE_GRPC_ADDR"
	EnvHTTPAddr          = "CONTROLPLANE_HTTP_ADDR"
	EnvPprofAddr         = "CONTROLPLANE_PPROF_ADDR"
	EnvTokens            = "CONTROLPLANE_TOKENS"      // read by apitoken
	EnvTokensFile        = "CONTROLPLANE_TOKENS_FILE" // read by apitoken
	EnvRetireGrace       = "CONTROLPLANE_RETIRE_GRACE"
	EnvRetireDrain       = "CONTROLPLANE_RETIRE_DRAIN"
	EnvMaxLag            = "CONTROLPLANE_MAX_LAG"
	EnvCatchUpTimeout    = "CONTROLPLANE_CATCH_UP_TIMEOUT"
	EnvTopicPrefix       = "CONTROLPLANE_TOPIC_PREFIX"
	EnvShutdownTimeout   = "CONTROLPLANE_SHUTDOWN_TIMEOUT"
	EnvLogLevel          = "CONTROLPLANE_LOG_LEVEL"
	EnvLogFormat         = "CONTROLPLANE_LOG_FORMAT"
	EnvPointerReconcile  = "CONTROLPLANE_POINTER_RECONCILE_INTERVAL"
	EnvMigrate           = "CONTROLPLANE_MIGRATE"
	EnvConsumerStale     = "CONTROLPLANE_CONSUMER_REPORT_STALE"
)

// Defaults.
const (
	DefaultTemporalNamespace = temporalconf.DefaultNamespace
	DefaultTemporalUIURL     = "http://127.0.0.1:58233"
	DefaultGRPCAddr          = "127.0.0.1:58090"
	DefaultHTTPAddr          = "127.0.0.1:58091"
	DefaultRetireGrace       = 10 * time.Minute
	DefaultRetireDrain       = 5 * time.Second
	DefaultPointerReconcile  = 10 * time.Second
	DefaultCatchUpTimeout    = time.Hour
	DefaultShutdownTimeout   = 20 * time.Second
	// DefaultConsumerStale is five of the cache-producer's default report intervals (2 s).
	DefaultConsumerStale = 10 * time.Second
	// MinTokenLen is the shortest API token accepted: a guessable token is refused at start.
	MinTokenLen = apitoken.MinLen
)

// ErrInvalid is matched (errors.Is) by every configuration error.
var ErrInvalid = envconf.ErrInvalid

// VarError names the environment variable whose value is invalid (envconf's, shared by
// every service).
type VarError = envconf.VarError

// Config is the whole service configuration.
type Config struct {
	DatabaseURL string // secret: the password
	// CoreDatabaseURL, when set, is the core service's database, whose tables' columns are the
	// fields of the models of the same name (information_schema.columns).
	CoreDatabaseURL string // secret: the password
	// Models are model fields given in CONTROLPLANE_MODELS; they take precedence over the core
	// database.
	Models modelcatalog.Static

	// Redis is where the pointers are published (CONTROLPLANE_REDIS_*): a standalone primary,
	// a Cluster, or a primary found through Sentinel; ACL user and TLS (CA, client
	// certificate) included. Read replicas are refused: pointers are read back from the
	// primary.
	Redis redisconf.Config

	// Temporal is the Temporal connection (CONTROLPLANE_TEMPORAL_*: host:port, namespace, TLS,
	// mutual TLS, API key; see temporalconf).
	Temporal      temporalconf.Config
	TemporalUIURL string
	// TLS is the gRPC and HTTP listeners' TLS (CONTROLPLANE_TLS_CERT_FILE, _TLS_KEY_FILE; with
	// _TLS_CLIENT_CA_FILE every client must present a certificate that CA signed).
	TLS tlsconf.Server

	GRPCAddr string
	HTTPAddr string
	// PprofAddr, when set, serves net/http/pprof on a listener of its own
	// (CONTROLPLANE_PPROF_ADDR; default empty: off). Never the HTTP or gRPC address.
	PprofAddr string
	Tokens    []string // secret

	RetireGrace     time.Duration
	RetireDrain     time.Duration
	MaxLag          int64
	CatchUpTimeout  time.Duration
	TopicPrefix     string
	ShutdownTimeout time.Duration
	LogLevel        slog.Level
	LogJSON         bool
	// PointerReconcile is how often every projection's Redis pointer is checked against the
	// registry and restored when missing or wrong (CONTROLPLANE_POINTER_RECONCILE_INTERVAL,
	// default 10 s; 0 turns it off).
	PointerReconcile time.Duration
	// Migrate applies the control set of migrations to DatabaseURL at start
	// (CONTROLPLANE_MIGRATE, default false: the service only checks that they are applied).
	Migrate bool
	// ConsumerStale is the age past which a generation's consumer report says no replica is
	// reporting (CONTROLPLANE_CONSUMER_REPORT_STALE, default 10 s: five of the cache-producer's
	// default report intervals).
	ConsumerStale time.Duration
}

// FromEnv reads the configuration with getenv (os.Getenv in production, a map lookup in tests)
// and validates it; readFile reads CONTROLPLANE_TOKENS_FILE (os.ReadFile in production). The
// error joins one *VarError per bad variable.
func FromEnv(getenv func(string) string, readFile func(string) ([]byte, error)) (Config, error) {
	if readFile == nil {
		readFile = os.ReadFile
	}
	r := envconf.New(Prefix, getenv)
	c := Config{
		DatabaseURL:      pgconf.URL(r, EnvDatabaseURL, true, "a PostgreSQL URL such as postgres://user:pass@host:5432/db"),
		CoreDatabaseURL:  pgconf.URL(r, EnvCoreDatabaseURL, false, ""),
		Redis:            redisconf.Load(r),
		Temporal:         temporalconf.Load(r),
		TLS:              tlsconf.LoadServer(r, tlsconf.ServerVars{CertFile: "TLS_CERT_FILE", KeyFile: "TLS_KEY_FILE", ClientCAFile: "TLS_CLIENT_CA_FILE"}),
		TemporalUIURL:    strings.TrimRight(r.String(EnvTemporalUIURL, DefaultTemporalUIURL), "/"),
		GRPCAddr:         r.HostPort(EnvGRPCAddr, DefaultGRPCAddr),
		HTTPAddr:         r.HostPort(EnvHTTPAddr, DefaultHTTPAddr),
		PprofAddr:        r.HostPort(EnvPprofAddr, ""),
		RetireGrace:      r.Duration(EnvRetireGrace, DefaultRetireGrace, 0),
		RetireDrain:      r.Duration(EnvRetireDrain, DefaultRetireDrain, time.Millisecond),
		MaxLag:           r.Int64(EnvMaxLag, 0, 0, 1<<62),
		CatchUpTimeout:   r.Duration(EnvCatchUpTimeout, DefaultCatchUpTimeout, time.Second),
		TopicPrefix:      r.String(EnvTopicPrefix, events.DefaultTopicPrefix),
		ShutdownTimeout:  r.Duration(EnvShutdownTimeout, DefaultShutdownTimeout, time.Millisecond),
		LogLevel:         r.LogLevel(EnvLogLevel, slog.LevelInfo),
		LogJSON:          r.OneOf(EnvLogFormat, "json", "json", "text") == "json",
		PointerReconcile: r.Duration(EnvPointerReconcile, DefaultPointerReconcile, 0),
		Migrate:          r.Bool(EnvMigrate, false),
		ConsumerStale:    r.Duration(EnvConsumerStale, DefaultConsumerStale, 100*time.Millisecond),
	}
	if v := r.String(EnvModels, ""); v != "" {
		m, err := modelcatalog.ParseStatic(v)
		if err != nil {
			r.Fail(EnvModels, "%v", err)
		}
		c.Models = m
	}
	if len(c.Models) == 0 && c.CoreDatabaseURL == "" {
		r.Fail(EnvModels, "set %s (model=field,field;...) or %s (columns of the core tables), so that definitions can be checked against the model's fields", EnvModels, EnvCoreDatabaseURL)
	}
	if c.Temporal.HostPort == "" {
		r.Fail(EnvTemporalHostPort, "required (the Temporal frontend, host:port)")
	}
	if u, err := url.Parse(c.TemporalUIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.Fail(EnvTemporalUIURL, "%q is not an http(s) URL", c.TemporalUIURL)
	}
	c.Tokens = apitoken.Load(r, readFile).Tokens
	if err := events.ValidateTopicPrefix(c.TopicPrefix); err != nil {
		r.Fail(EnvTopicPrefix, "%v", err)
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LogValue logs the configuration with secrets masked: passwords as envconf.Masked, tokens as a
// count.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("database_url", envconf.MaskURL(c.DatabaseURL)),
		slog.String("core_database_url", envconf.MaskURL(c.CoreDatabaseURL)),
		slog.Any("models", c.Models.Names()),
		slog.Any("redis", c.Redis),
		slog.Any("temporal", c.Temporal),
		slog.Any("tls", c.TLS),
		slog.String("temporal_ui_url", c.TemporalUIURL),
		slog.String("grpc_addr", c.GRPCAddr),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("pprof_addr", c.PprofAddr),
		slog.Int("tokens", len(c.Tokens)),
		slog.Duration("retire_grace", c.RetireGrace),
		slog.Duration("retire_drain", c.RetireDrain),
		slog.Int64("max_lag", c.MaxLag),
		slog.Duration("catch_up_timeout", c.CatchUpTimeout),
		slog.String("topic_prefix", c.TopicPrefix),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("log_level", c.LogLevel.String()),
		slog.Bool("log_json", c.LogJSON),
		slog.Duration("pointer_reconcile_interval", c.PointerReconcile),
		slog.Duration("consumer_report_stale", c.ConsumerStale),
		slog.Bool("migrate", c.Migrate),
	)
}

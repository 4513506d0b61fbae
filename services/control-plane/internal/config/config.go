// Package config reads and validates the control-plane's configuration from environment
// variables. Every invalid value is reported with the name of the variable at fault; secrets
// (database passwords, the Redis password, API tokens) are masked when the configuration is
// logged.
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

	"github.com/jackc/pgx/v5"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/services/control-plane/internal/modelcatalog"
)

// Environment variable names.
const (
	EnvDatabaseURL       = "CONTROLPLANE_DATABASE_URL"
	EnvCoreDatabaseURL   = "CONTROLPLANE_CORE_DATABASE_URL"
	EnvModels            = "CONTROLPLANE_MODELS"
	EnvRedisAddr         = "CONTROLPLANE_REDIS_ADDR"
	EnvRedisPassword     = "CONTROLPLANE_REDIS_PASSWORD"
	EnvRedisTLS          = "CONTROLPLANE_REDIS_TLS"
	EnvTemporalHostPort  = "CONTROLPLANE_TEMPORAL_HOSTPORT"
	EnvTemporalNamespace = "CONTROLPLANE_TEMPORAL_NAMESPACE"
	EnvTemporalUIURL     = "CONTROLPLANE_TEMPORAL_UI_URL"
	EnvGRPCAddr          = "CONTROLPLANE_GRPC_ADDR"
	EnvHTTPAddr          = "CONTROLPLANE_HTTP_ADDR"
	EnvTokens            = "CONTROLPLANE_TOKENS"
	EnvTokensFile        = "CONTROLPLANE_TOKENS_FILE"
	EnvRetireGrace       = "CONTROLPLANE_RETIRE_GRACE"
	EnvRetireDrain       = "CONTROLPLANE_RETIRE_DRAIN"
	EnvMaxLag            = "CONTROLPLANE_MAX_LAG"
	EnvCatchUpTimeout    = "CONTROLPLANE_CATCH_UP_TIMEOUT"
	EnvTopicPrefix       = "CONTROLPLANE_TOPIC_PREFIX"
	EnvShutdownTimeout   = "CONTROLPLANE_SHUTDOWN_TIMEOUT"
	EnvLogLevel          = "CONTROLPLANE_LOG_LEVEL"
)

// Defaults.
const (
	DefaultTemporalNamespace = "default"
	DefaultTemporalUIURL     = "http://127.0.0.1:58233"
	DefaultGRPCAddr          = "127.0.0.1:58090"
	DefaultHTTPAddr          = "127.0.0.1:58091"
	DefaultRetireGrace       = 10 * time.Minute
	DefaultRetireDrain       = 5 * time.Second
	DefaultCatchUpTimeout    = time.Hour
	DefaultShutdownTimeout   = 20 * time.Second
	// MinTokenLen is the shortest API token accepted: a guessable token is refused at start.
	MinTokenLen = 16
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

// Config is the whole service configuration.
type Config struct {
	DatabaseURL string // secret: the password
	// CoreDatabaseURL, when set, is the core service's database, whose tables' columns are the
	// fields of the models of the same name (information_schema.columns).
	CoreDatabaseURL string // secret: the password
	// Models are model fields given in CONTROLPLANE_MODELS; they take precedence over the core
	// database.
	Models modelcatalog.Static

	RedisAddrs    []string
	RedisPassword string // secret
	RedisTLS      bool

	TemporalHostPort  string
	TemporalNamespace string
	TemporalUIURL     string

	GRPCAddr string
	HTTPAddr string
	Tokens   []string // secret

	RetireGrace     time.Duration
	RetireDrain     time.Duration
	MaxLag          int64
	CatchUpTimeout  time.Duration
	TopicPrefix     string
	ShutdownTimeout time.Duration
	LogLevel        slog.Level
}

// FromEnv reads the configuration with getenv (os.Getenv in production, a map lookup in tests)
// and validates it; readFile reads CONTROLPLANE_TOKENS_FILE (os.ReadFile in production). The
// error joins one *VarError per bad variable.
func FromEnv(getenv func(string) string, readFile func(string) ([]byte, error)) (Config, error) {
	if readFile == nil {
		readFile = os.ReadFile
	}
	c := Config{
		TemporalNamespace: DefaultTemporalNamespace,
		TemporalUIURL:     DefaultTemporalUIURL,
		GRPCAddr:          DefaultGRPCAddr,
		HTTPAddr:          DefaultHTTPAddr,
		RetireGrace:       DefaultRetireGrace,
		RetireDrain:       DefaultRetireDrain,
		CatchUpTimeout:    DefaultCatchUpTimeout,
		TopicPrefix:       events.DefaultTopicPrefix,
		ShutdownTimeout:   DefaultShutdownTimeout,
		LogLevel:          slog.LevelInfo,
	}
	var errs []error
	fail := func(name, format string, args ...any) {
		errs = append(errs, &VarError{Var: name, Reason: fmt.Sprintf(format, args...)})
	}

	c.DatabaseURL = strings.TrimSpace(getenv(EnvDatabaseURL))
	if c.DatabaseURL == "" {
		fail(EnvDatabaseURL, "required (a PostgreSQL URL such as postgres://user:pass@host:5432/db)")
	} else if _, err := pgx.ParseConfig(c.DatabaseURL); err != nil {
		fail(EnvDatabaseURL, "not a valid PostgreSQL connection string")
	}
	if c.CoreDatabaseURL = strings.TrimSpace(getenv(EnvCoreDatabaseURL)); c.CoreDatabaseURL != "" {
		if _, err := pgx.ParseConfig(c.CoreDatabaseURL); err != nil {
			fail(EnvCoreDatabaseURL, "not a valid PostgreSQL connection string")
		}
	}
	if v := strings.TrimSpace(getenv(EnvModels)); v != "" {
		m, err := modelcatalog.ParseStatic(v)
		if err != nil {
			fail(EnvModels, "%v", err)
		}
		c.Models = m
	}
	if len(c.Models) == 0 && c.CoreDatabaseURL == "" {
		fail(EnvModels, "set %s (model=field,field;...) or %s (columns of the core tables), so that definitions can be checked against the model's fields", EnvModels, EnvCoreDatabaseURL)
	}

	if v := strings.TrimSpace(getenv(EnvRedisAddr)); v == "" {
		fail(EnvRedisAddr, "required (host:port, or a comma-separated list of Redis Cluster nodes)")
	} else {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a == "" {
				continue
			}
			if !hostPort(a) {
				fail(EnvRedisAddr, "%q is not host:port", a)
				continue
			}
			c.RedisAddrs = append(c.RedisAddrs, a)
		}
	}
	c.RedisPassword = getenv(EnvRedisPassword)
	boolVar(getenv, EnvRedisTLS, &c.RedisTLS, fail)

	if c.TemporalHostPort = strings.TrimSpace(getenv(EnvTemporalHostPort)); c.TemporalHostPort == "" {
		fail(EnvTemporalHostPort, "required (the Temporal frontend, host:port)")
	} else if !hostPort(c.TemporalHostPort) {
		fail(EnvTemporalHostPort, "%q is not host:port", c.TemporalHostPort)
	}
	if v := strings.TrimSpace(getenv(EnvTemporalNamespace)); v != "" {
		c.TemporalNamespace = v
	}
	if v := strings.TrimSpace(getenv(EnvTemporalUIURL)); v != "" {
		c.TemporalUIURL = strings.TrimRight(v, "/")
		if u, err := url.Parse(c.TemporalUIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fail(EnvTemporalUIURL, "%q is not an http(s) URL", v)
		}
	}

	addrVar(getenv, EnvGRPCAddr, &c.GRPCAddr, fail)
	addrVar(getenv, EnvHTTPAddr, &c.HTTPAddr, fail)

	c.Tokens = readTokens(getenv, readFile, fail)

	durVar(getenv, EnvRetireGrace, &c.RetireGrace, fail, 0)
	durVar(getenv, EnvRetireDrain, &c.RetireDrain, fail, time.Millisecond)
	durVar(getenv, EnvCatchUpTimeout, &c.CatchUpTimeout, fail, time.Second)
	durVar(getenv, EnvShutdownTimeout, &c.ShutdownTimeout, fail, time.Millisecond)
	if v := strings.TrimSpace(getenv(EnvMaxLag)); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			fail(EnvMaxLag, "%q is not a non-negative integer (records)", v)
		}
		c.MaxLag = n
	}
	if v := strings.TrimSpace(getenv(EnvTopicPrefix)); v != "" {
		if err := events.ValidateTopicPrefix(v); err != nil {
			fail(EnvTopicPrefix, "%v", err)
		}
		c.TopicPrefix = v
	}
	if v := strings.TrimSpace(getenv(EnvLogLevel)); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			fail(EnvLogLevel, "%q is not one of debug, info, warn, error", v)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

func readTokens(getenv func(string) string, readFile func(string) ([]byte, error), fail func(string, string, ...any)) []string {
	var tokens []string
	add := func(src, raw string, sep func(rune) bool) {
		for i, tok := range strings.FieldsFunc(raw, sep) {
			tok = strings.TrimSpace(tok)
			switch {
			case tok == "" || strings.HasPrefix(tok, "#"):
			case len(tok) < MinTokenLen:
				// Never echo the token itself.
				fail(src, "token #%d is shorter than %d bytes", i+1, MinTokenLen)
			case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
				fail(src, "token #%d holds whitespace or control characters", i+1)
			default:
				tokens = append(tokens, tok)
			}
		}
	}
	add(EnvTokens, getenv(EnvTokens), func(r rune) bool { return r == ',' })
	if path := strings.TrimSpace(getenv(EnvTokensFile)); path != "" {
		b, err := readFile(path)
		if err != nil {
			fail(EnvTokensFile, "read %s: %v", path, errors.Unwrap(err))
		} else {
			add(EnvTokensFile, string(b), func(r rune) bool { return r == '\n' || r == '\r' })
		}
	}
	if len(tokens) == 0 {
		fail(EnvTokens, "at least one API token is required (%s, comma-separated, or %s, one per line)", EnvTokens, EnvTokensFile)
	}
	return tokens
}

func hostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

func addrVar(getenv func(string) string, name string, dst *string, fail func(string, string, ...any)) {
	if v := strings.TrimSpace(getenv(name)); v != "" {
		if !hostPort(v) {
			fail(name, "%q is not host:port", v)
		}
		*dst = v
	}
}

func boolVar(getenv func(string) string, name string, dst *bool, fail func(string, string, ...any)) {
	if v := strings.TrimSpace(getenv(name)); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fail(name, "%q is not a boolean (true/false)", v)
		}
		*dst = b
	}
}

func durVar(getenv func(string) string, name string, dst *time.Duration, fail func(string, string, ...any), min time.Duration) {
	if v := strings.TrimSpace(getenv(name)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < min {
			fail(name, "%q is not a duration of at least %v (e.g. 10m, 30s)", v, min)
		}
		*dst = d
	}
}

// maskURL hides the password of a URL-form connection string.
func maskURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "(set, not shown)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.Redacted()
}

// LogValue logs the configuration with secrets masked: passwords as xxxxx, tokens as a count.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("database_url", maskURL(c.DatabaseURL)),
		slog.String("core_database_url", maskURL(c.CoreDatabaseURL)),
		slog.Any("models", c.Models.Names()),
		slog.Any("redis_addrs", c.RedisAddrs),
		slog.Bool("redis_password_set", c.RedisPassword != ""),
		slog.Bool("redis_tls", c.RedisTLS),
		slog.String("temporal_hostport", c.TemporalHostPort),
		slog.String("temporal_namespace", c.TemporalNamespace),
		slog.String("temporal_ui_url", c.TemporalUIURL),
		slog.String("grpc_addr", c.GRPCAddr),
		slog.String("http_addr", c.HTTPAddr),
		slog.Int("tokens", len(c.Tokens)),
		slog.Duration("retire_grace", c.RetireGrace),
		slog.Duration("retire_drain", c.RetireDrain),
		slog.Int64("max_lag", c.MaxLag),
		slog.Duration("catch_up_timeout", c.CatchUpTimeout),
		slog.String("topic_prefix", c.TopicPrefix),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("log_level", c.LogLevel.String()),
	)
}

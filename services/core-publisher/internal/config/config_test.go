package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/svcconfig/kafkaconf"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

const envKafkaBrokers = "PUBLISHER_KAFKA_BROKERS"

const apiToken = "publisher-token-0123456789"

var minimal = []string{
	EnvDatabaseURL, "postgres://app:s3cret@db:5432/core?sslmode=require",
	envKafkaBrokers, "k1:9092, k2:9092",
	EnvTokens, apiToken,
}

func TestFromEnvDefaults(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envOf(minimal...))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"brokers", strings.Join(c.Kafka.Brokers, ","), "k1:9092,k2:9092"},
		{"topic prefix", c.TopicPrefix, "distcache"},
		{"replication factor", c.ReplicationFactor, -1},
		{"http addr", c.HTTPAddr, "127.0.0.1:58081"},
		{"batch size", c.BatchSize, DefaultBatchSize},
		{"poll interval", c.PollInterval, time.Second},
		{"auto backload", c.AutoBackload, true},
		{"commit fence", c.CommitFence, true},
		{"kafka transactions", c.KafkaTransactions, true},
		{"kafka client id", c.Kafka.ClientID, DefaultKafkaClientID},
		{"sasl", c.Kafka.SASLMechanism, ""},
		{"max event bytes", c.MaxEventBytes, 1 << 20},
		{"version check", c.VersionCheck, true},
		{"dead letter retention", c.DeadLetterRetention, 7 * 24 * time.Hour},
		{"outbox models", len(c.OutboxModels), 0},
		{"api tokens", len(c.API.Tokens), 1},
		{"api insecure", c.API.Insecure, false},
		{"compression", c.Compression, "lz4"},
		{"pprof addr", c.PprofAddr, ""},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestFromEnvValues(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envOf(append(minimal,
		EnvTopicPrefix, "prod.core",
		EnvReplicationFactor, "3",
		EnvBatchSize, "500",
		EnvPollInterval, "250ms",
		EnvModels, "users:id, teams=app.teams:slug, accounts:id:except:password_hash|api_key",
		"PUBLISHER_KAFKA_SASL_USERNAME", "pub",
		"PUBLISHER_KAFKA_SASL_PASSWORD", "hunter2",
		"PUBLISHER_KAFKA_SASL_MECHANISM", "scram-sha-512",
		EnvAutoBackload, "false",
		EnvCommitFence, "false",
		EnvMaxEventBytes, "4194304",
		EnvOutboxModels, "orders, invoices",
		EnvVersionCheck, "false",
		EnvDeadLetterRetention, "72h",
		EnvCompression, "ZSTD",
		EnvPprofAddr, "127.0.0.1:6060",
	)...))
	if err != nil {
		t.Fatal(err)
	}
	if c.TopicPrefix != "prod.core" || c.ReplicationFactor != 3 || c.BatchSize != 500 || c.PollInterval != 250*time.Millisecond || c.AutoBackload || c.CommitFence || c.MaxEventBytes != 4<<20 {
		t.Errorf("got %+v", c)
	}
	want := []Model{{"users", "users", "id", ""}, {"teams", "app.teams", "slug", ""}, {"accounts", "accounts", "id", "except:password_hash|api_key"}}
	if len(c.Models) != 3 || c.Models[0] != want[0] || c.Models[1] != want[1] || c.Models[2] != want[2] {
		t.Errorf("models: got %+v, want %+v", c.Models, want)
	}
	if fmt.Sprint(c.OutboxModels) != "[orders invoices]" || c.VersionCheck || c.DeadLetterRetention != 72*time.Hour {
		t.Errorf("outbox models %v, version check %v, dead-letter retention %v; want [orders invoices], false, 72h",
			c.OutboxModels, c.VersionCheck, c.DeadLetterRetention)
	}
	if c.Compression != "zstd" || c.PprofAddr != "127.0.0.1:6060" {
		t.Errorf("compression %q, pprof addr %q; want zstd, 127.0.0.1:6060", c.Compression, c.PprofAddr)
	}
	if c.Kafka.SASLMechanism != kafkaconf.SASLScramSHA512 || c.Kafka.SASLUsername != "pub" {
		t.Errorf("sasl: got %q as %q, want %q as pub", c.Kafka.SASLMechanism, c.Kafka.SASLUsername, kafkaconf.SASLScramSHA512)
	}
}

func TestFromEnvErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"no database", []string{envKafkaBrokers, "k:9092", EnvTokens, apiToken}, EnvDatabaseURL},
		{"bad database", []string{EnvDatabaseURL, "postgres://u:pw@host:notaport/db", envKafkaBrokers, "k:9092", EnvTokens, apiToken}, EnvDatabaseURL},
		{"missing PG CA file", []string{EnvDatabaseURL, "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", envKafkaBrokers, "k:9092", EnvTokens, apiToken}, EnvDatabaseURL},
		{"no brokers", []string{EnvDatabaseURL, "postgres://h/db", EnvTokens, apiToken}, envKafkaBrokers},
		{"broker without port", append(minimal[:2:2], envKafkaBrokers, "kafka", EnvTokens, apiToken), envKafkaBrokers},
		{"no token", minimal[:4:4], EnvTokens},
		{"short token", append(minimal[:4:4], EnvTokens, "short-token"), EnvTokens},
		{"missing token file", append(minimal[:4:4], EnvTokensFile, "/nonexistent/tokens"), EnvTokensFile},
		{"insecure with a token", append(minimal, EnvInsecureNoAuth, "true"), EnvInsecureNoAuth},
		{"bad prefix", append(minimal, EnvTopicPrefix, ".x"), EnvTopicPrefix},
		{"bad replication", append(minimal, EnvReplicationFactor, "0"), EnvReplicationFactor},
		{"bad batch", append(minimal, EnvBatchSize, "lots"), EnvBatchSize},
		{"bad poll", append(minimal, EnvPollInterval, "soon"), EnvPollInterval},
		{"bad http addr", append(minimal, EnvHTTPAddr, "58081"), EnvHTTPAddr},
		{"bad models", append(minimal, EnvModels, "users"), EnvModels},
		{"duplicate models", append(minimal, EnvModels, "users:id,users:uid"), EnvModels},
		{"bad mechanism", append(minimal, "PUBLISHER_KAFKA_SASL_MECHANISM", "GSSAPI", "PUBLISHER_KAFKA_SASL_USERNAME", "u", "PUBLISHER_KAFKA_SASL_PASSWORD", "p"), "PUBLISHER_KAFKA_SASL_MECHANISM"},
		{"sasl without password", append(minimal, "PUBLISHER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256", "PUBLISHER_KAFKA_SASL_USERNAME", "u"), "PUBLISHER_KAFKA_SASL_PASSWORD"},
		{"sasl user without mechanism", append(minimal, "PUBLISHER_KAFKA_SASL_USERNAME", "u"), "PUBLISHER_KAFKA_SASL_MECHANISM"},
		{"sasl PLAIN without TLS", append(minimal, "PUBLISHER_KAFKA_SASL_MECHANISM", "PLAIN", "PUBLISHER_KAFKA_SASL_USERNAME", "u", "PUBLISHER_KAFKA_SASL_PASSWORD", "p"), "PUBLISHER_KAFKA_SASL_ALLOW_PLAINTEXT"},
		{"missing CA file", append(minimal, "PUBLISHER_KAFKA_TLS", "true", "PUBLISHER_KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem"), "PUBLISHER_KAFKA_TLS_CA_FILE"},
		{"CA file without TLS", append(minimal, "PUBLISHER_KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem"), "PUBLISHER_KAFKA_TLS_CA_FILE"},
		{"bad log format", append(minimal, EnvLogFormat, "xml"), EnvLogFormat},
		{"bad bool", append(minimal, EnvAutoBackload, "maybe"), EnvAutoBackload},
		{"bad log level", append(minimal, EnvLogLevel, "loud"), EnvLogLevel},
		{"max event bytes not a number", append(minimal, EnvMaxEventBytes, "1MiB"), EnvMaxEventBytes},
		{"max event bytes too small", append(minimal, EnvMaxEventBytes, "100"), EnvMaxEventBytes},
		{"outbox model with a dot", append(minimal, EnvOutboxModels, "ok,users.v2"), EnvOutboxModels},
		{"model with a bad column spec", append(minimal, EnvModels, "users:id:hide:password_hash"), EnvModels},
		{"dead-letter retention not a duration", append(minimal, EnvDeadLetterRetention, "7d"), EnvDeadLetterRetention},
		{"version check not a bool", append(minimal, EnvVersionCheck, "maybe"), EnvVersionCheck},
		{"max event bytes too large", append(minimal, EnvMaxEventBytes, "1073741824"), EnvMaxEventBytes},
		{"unknown compression", append(minimal, EnvCompression, "brotli"), EnvCompression},
		{"pprof addr without port", append(minimal, EnvPprofAddr, "localhost"), EnvPprofAddr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromEnv(envOf(tt.env...))
			if err == nil {
				t.Fatalf("got nil error, want one naming %s", tt.want)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an ErrInvalid naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

// TestInsecureNoAuth: without a token the publisher starts only when PUBLISHER_INSECURE_NO_AUTH
// says so, and then its configuration says the API is open.
func TestInsecureNoAuth(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envOf(append(minimal[:4:4], EnvInsecureNoAuth, "true")...))
	if err != nil {
		t.Fatal(err)
	}
	if !c.API.Insecure || len(c.API.Tokens) != 0 {
		t.Errorf("got insecure %v with %d tokens, want insecure with none", c.API.Insecure, len(c.API.Tokens))
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envOf(append(minimal, "PUBLISHER_KAFKA_TLS", "true", "PUBLISHER_KAFKA_SASL_MECHANISM", "PLAIN",
		"PUBLISHER_KAFKA_SASL_USERNAME", "pub", "PUBLISHER_KAFKA_SASL_PASSWORD", "hunter2")...))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	out := buf.String()
	for _, secret := range []string{"s3cret", "hunter2", apiToken} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains secret %q: %s", secret, out)
		}
	}
	for _, want := range []string{"app:%2A%2A%2A%2A@db:5432", "sslmode=require", `"sasl_password":"****"`, `"sasl_username":"pub"`, `"api_tokens":1`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q: %s", want, out)
		}
	}
}

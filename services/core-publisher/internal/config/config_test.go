package config

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

var minimal = []string{
	EnvDatabaseURL, "postgres://app:s3cret@db:5432/core?sslmode=require",
	EnvKafkaBrokers, "k1:9092, k2:9092",
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
		{"kafka transactions", c.Kafka.Transactions, true},
		{"sasl", c.Kafka.SASLMechanism, ""},
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
		EnvModels, "users:id, teams=app.teams:slug",
		EnvKafkaSASLUser, "pub",
		EnvKafkaSASLPassword, "hunter2",
		EnvKafkaSASLMechanism, "scram-sha-512",
		EnvAutoBackload, "false",
		EnvCommitFence, "false",
	)...))
	if err != nil {
		t.Fatal(err)
	}
	if c.TopicPrefix != "prod.core" || c.ReplicationFactor != 3 || c.BatchSize != 500 || c.PollInterval != 250*time.Millisecond || c.AutoBackload || c.CommitFence {
		t.Errorf("got %+v", c)
	}
	want := []Model{{"users", "users", "id"}, {"teams", "app.teams", "slug"}}
	if len(c.Models) != 2 || c.Models[0] != want[0] || c.Models[1] != want[1] {
		t.Errorf("models: got %+v, want %+v", c.Models, want)
	}
	if c.Kafka.SASLMechanism != SASLScramSHA512 {
		t.Errorf("sasl mechanism: got %q, want %q", c.Kafka.SASLMechanism, SASLScramSHA512)
	}
}

func TestFromEnvErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"no database", []string{EnvKafkaBrokers, "k:9092"}, EnvDatabaseURL},
		{"bad database", []string{EnvDatabaseURL, "postgres://u:pw@host:notaport/db", EnvKafkaBrokers, "k:9092"}, EnvDatabaseURL},
		{"missing PG CA file", []string{EnvDatabaseURL, "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", EnvKafkaBrokers, "k:9092"}, EnvDatabaseURL},
		{"no brokers", []string{EnvDatabaseURL, "postgres://h/db"}, EnvKafkaBrokers},
		{"broker without port", append(minimal[:2:2], EnvKafkaBrokers, "kafka"), EnvKafkaBrokers},
		{"bad prefix", append(minimal, EnvTopicPrefix, ".x"), EnvTopicPrefix},
		{"bad replication", append(minimal, EnvReplicationFactor, "0"), EnvReplicationFactor},
		{"bad batch", append(minimal, EnvBatchSize, "lots"), EnvBatchSize},
		{"bad poll", append(minimal, EnvPollInterval, "soon"), EnvPollInterval},
		{"bad http addr", append(minimal, EnvHTTPAddr, "58081"), EnvHTTPAddr},
		{"bad models", append(minimal, EnvModels, "users"), EnvModels},
		{"duplicate models", append(minimal, EnvModels, "users:id,users:uid"), EnvModels},
		{"bad mechanism", append(minimal, EnvKafkaSASLMechanism, "GSSAPI", EnvKafkaSASLUser, "u", EnvKafkaSASLPassword, "p"), EnvKafkaSASLMechanism},
		{"sasl without password", append(minimal, EnvKafkaSASLUser, "u"), EnvKafkaSASLUser},
		{"missing CA file", append(minimal, EnvKafkaTLSCAFile, "/nonexistent/ca.pem"), EnvKafkaTLSCAFile},
		{"bad bool", append(minimal, EnvAutoBackload, "maybe"), EnvAutoBackload},
		{"bad log level", append(minimal, EnvLogLevel, "loud"), EnvLogLevel},
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

func TestLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envOf(append(minimal, EnvKafkaSASLUser, "pub", EnvKafkaSASLPassword, "hunter2")...))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	out := buf.String()
	for _, secret := range []string{"s3cret", "hunter2"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains secret %q: %s", secret, out)
		}
	}
	for _, want := range []string{"app:%2A%2A%2A%2A@db:5432", "sslmode=require", `"kafka_sasl_password":"****"`, `"kafka_sasl_user":"pub"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q: %s", want, out)
		}
	}
}

func TestMaskURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"postgres://u:p@h/db", "postgres://u:%2A%2A%2A%2A@h/db"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://h/db?password=p&sslmode=require", "postgres://h/db?password=%2A%2A%2A%2A&sslmode=require"},
		{"host=h password=p dbname=d", "host=h password=**** dbname=d"},
	}
	for _, tt := range tests {
		if got := MaskURL(tt.in); got != tt.want {
			t.Errorf("MaskURL(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

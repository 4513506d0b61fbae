package kafkaconf_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/internal/tlstest"
	"github.com/distcache/distcache/libs/svcconfig/kafkaconf"
)

const password = "kafka-pw-1234"

func load(env map[string]string) (kafkaconf.Config, error) {
	r := envconf.New("SVC", func(k string) string { return env[k] })
	c := kafkaconf.Load(r, "distcache-test")
	return c, r.Err()
}

// with returns the minimal valid environment plus kv pairs.
func with(kv ...string) map[string]string {
	m := map[string]string{"SVC_KAFKA_BROKERS": "k1:9092, k2:9092"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestLoadValid(t *testing.T) {
	t.Parallel()
	f := tlstest.Write(t)
	tests := []struct {
		name       string
		env        map[string]string
		wantMech   string
		wantTLS    bool
		wantOpts   int // seed brokers + client id + TLS + SASL
		wantClient string
	}{
		{name: "minimal", env: with(), wantOpts: 2, wantClient: "distcache-test"},
		{name: "client id", env: with("SVC_KAFKA_CLIENT_ID", "edge-1"), wantOpts: 2, wantClient: "edge-1"},
		{name: "TLS with CA and client certificate", env: with("SVC_KAFKA_TLS", "true", "SVC_KAFKA_TLS_CA_FILE", f.CA,
			"SVC_KAFKA_TLS_CERT_FILE", f.Cert, "SVC_KAFKA_TLS_KEY_FILE", f.Key), wantTLS: true, wantOpts: 3, wantClient: "distcache-test"},
		{name: "SCRAM without TLS", env: with("SVC_KAFKA_SASL_MECHANISM", "scram-sha-512", "SVC_KAFKA_SASL_USERNAME", "svc", "SVC_KAFKA_SASL_PASSWORD", password),
			wantMech: kafkaconf.SASLScramSHA512, wantOpts: 3, wantClient: "distcache-test"},
		{name: "SCRAM-SHA-256 over TLS", env: with("SVC_KAFKA_TLS", "true", "SVC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256", "SVC_KAFKA_SASL_USERNAME", "svc", "SVC_KAFKA_SASL_PASSWORD", password),
			wantMech: kafkaconf.SASLScramSHA256, wantTLS: true, wantOpts: 4, wantClient: "distcache-test"},
		{name: "PLAIN over TLS", env: with("SVC_KAFKA_TLS", "true", "SVC_KAFKA_SASL_MECHANISM", "PLAIN", "SVC_KAFKA_SASL_USERNAME", "svc", "SVC_KAFKA_SASL_PASSWORD", password),
			wantMech: kafkaconf.SASLPlain, wantTLS: true, wantOpts: 4, wantClient: "distcache-test"},
		{name: "PLAIN in clear text, explicitly allowed", env: with("SVC_KAFKA_SASL_MECHANISM", "PLAIN", "SVC_KAFKA_SASL_USERNAME", "svc",
			"SVC_KAFKA_SASL_PASSWORD", password, "SVC_KAFKA_SASL_ALLOW_PLAINTEXT", "true"), wantMech: kafkaconf.SASLPlain, wantOpts: 3, wantClient: "distcache-test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(c.Brokers, ","); got != "k1:9092,k2:9092" {
				t.Errorf("Brokers = %q", got)
			}
			if c.SASLMechanism != tt.wantMech || c.TLS.Enabled != tt.wantTLS || c.ClientID != tt.wantClient {
				t.Errorf("mechanism %q, TLS %v, client id %q; want %q, %v, %q", c.SASLMechanism, c.TLS.Enabled, c.ClientID, tt.wantMech, tt.wantTLS, tt.wantClient)
			}
			opts, err := c.Opts()
			if err != nil {
				t.Fatal(err)
			}
			if len(opts) != tt.wantOpts {
				t.Errorf("Opts() gave %d options, want %d", len(opts), tt.wantOpts)
			}
			cl, err := kgo.NewClient(opts...) // the options are consistent; no connection yet
			if err != nil {
				t.Fatalf("kgo.NewClient: %v", err)
			}
			cl.Close()
		})
	}
}

func TestLoadInvalidNamesTheVariable(t *testing.T) {
	t.Parallel()
	f := tlstest.Write(t)
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
		wantMsg string
	}{
		{name: "no brokers", env: map[string]string{}, wantVar: "SVC_KAFKA_BROKERS", wantMsg: "required"},
		{name: "blank brokers", env: map[string]string{"SVC_KAFKA_BROKERS": " , "}, wantVar: "SVC_KAFKA_BROKERS", wantMsg: "required"},
		{name: "broker without port", env: map[string]string{"SVC_KAFKA_BROKERS": "kafka"}, wantVar: "SVC_KAFKA_BROKERS", wantMsg: "host:port"},
		{name: "unknown mechanism", env: with("SVC_KAFKA_SASL_MECHANISM", "GSSAPI", "SVC_KAFKA_SASL_USERNAME", "u", "SVC_KAFKA_SASL_PASSWORD", password), wantVar: "SVC_KAFKA_SASL_MECHANISM", wantMsg: "not one of"},
		{name: "username without mechanism", env: with("SVC_KAFKA_SASL_USERNAME", "u"), wantVar: "SVC_KAFKA_SASL_MECHANISM", wantMsg: "required when"},
		{name: "password without mechanism", env: with("SVC_KAFKA_SASL_PASSWORD", password), wantVar: "SVC_KAFKA_SASL_MECHANISM", wantMsg: "required when"},
		{name: "mechanism without username", env: with("SVC_KAFKA_TLS", "true", "SVC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256", "SVC_KAFKA_SASL_PASSWORD", password), wantVar: "SVC_KAFKA_SASL_USERNAME", wantMsg: "required with"},
		{name: "mechanism without password", env: with("SVC_KAFKA_TLS", "true", "SVC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256", "SVC_KAFKA_SASL_USERNAME", "u"), wantVar: "SVC_KAFKA_SASL_PASSWORD", wantMsg: "required with"},
		{name: "PLAIN without TLS", env: with("SVC_KAFKA_SASL_MECHANISM", "PLAIN", "SVC_KAFKA_SASL_USERNAME", "u", "SVC_KAFKA_SASL_PASSWORD", password), wantVar: "SVC_KAFKA_SASL_MECHANISM", wantMsg: "SVC_KAFKA_SASL_ALLOW_PLAINTEXT=true"},
		{name: "PLAIN without TLS, allowance refused", env: with("SVC_KAFKA_SASL_MECHANISM", "PLAIN", "SVC_KAFKA_SASL_USERNAME", "u", "SVC_KAFKA_SASL_PASSWORD", password, "SVC_KAFKA_SASL_ALLOW_PLAINTEXT", "sure"), wantVar: "SVC_KAFKA_SASL_ALLOW_PLAINTEXT", wantMsg: "boolean"},
		{name: "CA without TLS", env: with("SVC_KAFKA_TLS_CA_FILE", f.CA), wantVar: "SVC_KAFKA_TLS_CA_FILE", wantMsg: "SVC_KAFKA_TLS is not true"},
		{name: "missing CA file", env: with("SVC_KAFKA_TLS", "true", "SVC_KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem"), wantVar: "SVC_KAFKA_TLS_CA_FILE", wantMsg: "cannot read"},
		{name: "key without certificate", env: with("SVC_KAFKA_TLS", "true", "SVC_KAFKA_TLS_KEY_FILE", f.Key), wantVar: "SVC_KAFKA_TLS_CERT_FILE", wantMsg: "together"},
		{name: "bad TLS bool", env: with("SVC_KAFKA_TLS", "maybe"), wantVar: "SVC_KAFKA_TLS", wantMsg: "boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(tt.env)
			if !errors.Is(err, envconf.ErrInvalid) {
				t.Fatalf("Load: %v, want ErrInvalid", err)
			}
			var ve *envconf.VarError
			found := false
			for _, e := range unjoin(err) {
				if errors.As(e, &ve) && ve.Var == tt.wantVar && strings.Contains(ve.Reason, tt.wantMsg) {
					found = true
				}
			}
			if !found {
				t.Errorf("Load: %v, want an error for %s saying %q", err, tt.wantVar, tt.wantMsg)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestLogValueMasksThePassword(t *testing.T) {
	t.Parallel()
	c, err := load(with("SVC_KAFKA_TLS", "true", "SVC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "SVC_KAFKA_SASL_USERNAME", "svc-user", "SVC_KAFKA_SASL_PASSWORD", password))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("starting", "kafka", c)
		out := buf.String()
		if strings.Contains(out, password) {
			t.Errorf("log shows the SASL password: %s", out)
		}
		for _, want := range []string{"k1:9092", "svc-user", "SCRAM-SHA-512", envconf.Masked} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q: %s", want, out)
			}
		}
	}
}

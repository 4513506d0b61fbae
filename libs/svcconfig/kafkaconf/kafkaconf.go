// Package kafkaconf reads a service's Kafka client settings from
// <PREFIX>_KAFKA_* environment variables and builds the franz-go client
// options from them: seed brokers, client id, TLS (with a client certificate
// for mutual TLS) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512). It is the
// one place the services turn configuration into a Kafka connection.
//
// SASL PLAIN sends the password as it is, so it is refused without TLS unless
// <PREFIX>_KAFKA_SASL_ALLOW_PLAINTEXT=true says the network is trusted.
package kafkaconf

import (
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/tlsconf"
)

// Variable names, under the service's prefix: PRODUCER_KAFKA_BROKERS, ...
const (
	VarBrokers               = "KAFKA_BROKERS"                  // required: host:port, comma-separated
	VarClientID              = "KAFKA_CLIENT_ID"                // default: the service's
	VarTLS                   = "KAFKA_TLS"                      // true: TLS to the brokers
	VarTLSCAFile             = "KAFKA_TLS_CA_FILE"              // PEM CA bundle (default: system roots)
	VarTLSCertFile           = "KAFKA_TLS_CERT_FILE"            // client certificate (mutual TLS)
	VarTLSKeyFile            = "KAFKA_TLS_KEY_FILE"             // its key
	VarTLSInsecureSkipVerify = "KAFKA_TLS_INSECURE_SKIP_VERIFY" // tests only
	VarSASLMechanism         = "KAFKA_SASL_MECHANISM"           // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	VarSASLUsername          = "KAFKA_SASL_USERNAME"
	VarSASLPassword          = "KAFKA_SASL_PASSWORD" // secret
	VarSASLAllowPlaintext    = "KAFKA_SASL_ALLOW_PLAINTEXT"
)

// SASL mechanisms.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Config is a Kafka connection.
type Config struct {
	Brokers  []string
	ClientID string
	TLS      tlsconf.Config
	// SASLMechanism is "" (no SASL), SASLPlain, SASLScramSHA256 or
	// SASLScramSHA512.
	SASLMechanism string
	SASLUsername  string
	SASLPassword  string // secret
	// SASLAllowPlaintext permits SASL PLAIN without TLS.
	SASLAllowPlaintext bool
}

// Load reads the Kafka variables under r's prefix; defaultClientID is the
// client id when <PREFIX>_KAFKA_CLIENT_ID is unset. Errors are recorded in r.
func Load(r *envconf.Reader, defaultClientID string) Config {
	c := Config{
		Brokers:  r.RequiredHostPorts(r.Name(VarBrokers), "host:port, comma-separated"),
		ClientID: r.String(r.Name(VarClientID), defaultClientID),
		TLS: tlsconf.Load(r, tlsconf.Vars{
			Enabled: VarTLS, CAFile: VarTLSCAFile, CertFile: VarTLSCertFile, KeyFile: VarTLSKeyFile,
			InsecureSkipVerify: VarTLSInsecureSkipVerify,
		}),
		SASLMechanism:      r.OneOf(r.Name(VarSASLMechanism), "", SASLPlain, SASLScramSHA256, SASLScramSHA512),
		SASLUsername:       r.String(r.Name(VarSASLUsername), ""),
		SASLPassword:       r.Secret(r.Name(VarSASLPassword)),
		SASLAllowPlaintext: r.Bool(r.Name(VarSASLAllowPlaintext), false),
	}
	mech, user, pass := r.Name(VarSASLMechanism), r.Name(VarSASLUsername), r.Name(VarSASLPassword)
	switch {
	case c.SASLMechanism == "" && r.Set(mech):
		// refused by OneOf
	case c.SASLMechanism == "":
		if c.SASLUsername != "" || c.SASLPassword != "" {
			r.Fail(mech, "required when %s or %s is set (%s, %s or %s)", user, pass, SASLPlain, SASLScramSHA256, SASLScramSHA512)
		}
	default:
		if c.SASLUsername == "" {
			r.Fail(user, "required with %s=%s", mech, c.SASLMechanism)
		}
		if c.SASLPassword == "" {
			r.Fail(pass, "required with %s=%s", mech, c.SASLMechanism)
		}
		if c.SASLMechanism == SASLPlain && !c.TLS.Enabled && !c.SASLAllowPlaintext {
			r.Fail(mech, "%s sends the password in clear text: set %s=true, or %s=true on a trusted network",
				SASLPlain, r.Name(VarTLS), r.Name(VarSASLAllowPlaintext))
		}
	}
	return c
}

// Opts returns the franz-go options of the connection: seed brokers, client
// id, TLS and SASL. Callers append their own (producer or consumer) options.
func (c Config) Opts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	tc, err := c.TLS.Build()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

func (c Config) mechanism() sasl.Mechanism {
	switch c.SASLMechanism {
	case SASLPlain:
		return plain.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsMechanism()
	case SASLScramSHA256:
		return scram.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsSha256Mechanism()
	case SASLScramSHA512:
		return scram.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsSha512Mechanism()
	}
	return nil
}

// LogValue implements slog.LogValuer: the connection with the SASL password
// masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers),
		slog.String("client_id", c.ClientID),
		slog.Any("tls", c.TLS),
		slog.String("sasl_mechanism", c.SASLMechanism),
		slog.String("sasl_username", c.SASLUsername),
		slog.String("sasl_password", envconf.Mask(c.SASLPassword)),
		slog.Bool("sasl_allow_plaintext", c.SASLAllowPlaintext),
	)
}

// Package tlsconf reads a TLS client configuration from a group of
// environment variables (kafkaconf and redisconf each name theirs) and builds
// the crypto/tls configuration from it: the server's CA, a client
// certificate for mutual TLS, and the skip-verify escape hatch.
//
// The rules: the files are only read with TLS switched on (a file set while
// TLS is off is an error, not a silent plaintext connection); a certificate
// and its key are set together; the files are read and parsed at load, so a
// bad PEM stops the service at start, with the variable named.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
)

// Vars are the variable names (suffixes under the reader's prefix) of one
// TLS configuration.
type Vars struct {
	Enabled            string // e.g. KAFKA_TLS
	CAFile             string // e.g. KAFKA_TLS_CA_FILE
	CertFile           string // e.g. KAFKA_TLS_CERT_FILE
	KeyFile            string // e.g. KAFKA_TLS_KEY_FILE
	InsecureSkipVerify string // e.g. KAFKA_TLS_INSECURE_SKIP_VERIFY
}

// Config is a TLS client configuration read from the environment.
type Config struct {
	Enabled bool
	// CAFile holds PEM certificates of the CAs trusted for the server
	// (empty: the system's roots).
	CAFile string
	// CertFile and KeyFile hold the client certificate and its key (PEM),
	// for servers that require mutual TLS.
	CertFile string
	KeyFile  string
	// InsecureSkipVerify accepts any server certificate. For tests only.
	InsecureSkipVerify bool

	names Vars // full variable names, for errors
}

// Load reads the variables named by vars under r's prefix. Errors are
// recorded in r.
func Load(r *envconf.Reader, vars Vars) Config {
	names := Vars{
		Enabled: r.Name(vars.Enabled), CAFile: r.Name(vars.CAFile), CertFile: r.Name(vars.CertFile),
		KeyFile: r.Name(vars.KeyFile), InsecureSkipVerify: r.Name(vars.InsecureSkipVerify),
	}
	c := Config{
		Enabled:            r.Bool(names.Enabled, false),
		CAFile:             r.File(names.CAFile),
		CertFile:           r.File(names.CertFile),
		KeyFile:            r.File(names.KeyFile),
		InsecureSkipVerify: r.Bool(names.InsecureSkipVerify, false),
		names:              names,
	}
	if !c.Enabled {
		for _, f := range []struct{ name, value string }{{names.CAFile, c.CAFile}, {names.CertFile, c.CertFile}, {names.KeyFile, c.KeyFile}} {
			if f.value != "" {
				r.Fail(f.name, "is set but %s is not true (set it to use TLS)", names.Enabled)
			}
		}
		if c.InsecureSkipVerify {
			r.Fail(names.InsecureSkipVerify, "is set but %s is not true", names.Enabled)
		}
		return c
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		r.Fail(names.CertFile, "%s and %s must be set together (a client certificate and its key)", names.CertFile, names.KeyFile)
		return c
	}
	if _, err := c.Build(); err != nil {
		r.Add(err)
	}
	return c
}

// Build returns the crypto/tls configuration: nil when TLS is off. Errors are
// *envconf.VarError naming the variable of the file at fault.
func (c Config) Build() (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // the operator's explicit choice
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, &envconf.VarError{Var: c.name(c.names.CAFile, "CA file"), Reason: fmt.Sprintf("read %q: %v", c.CAFile, err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &envconf.VarError{Var: c.name(c.names.CAFile, "CA file"), Reason: fmt.Sprintf("no PEM certificate in %q", c.CAFile)}
		}
		t.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, &envconf.VarError{Var: c.name(c.names.CertFile, "client certificate"), Reason: fmt.Sprintf("load the client certificate %q and key %q: %v", c.CertFile, c.KeyFile, err)}
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

func (c Config) name(v, fallback string) string {
	if v != "" {
		return v
	}
	return fallback
}

// LogValue implements slog.LogValuer (file paths are not secret).
func (c Config) LogValue() slog.Value {
	if !c.Enabled {
		return slog.GroupValue(slog.Bool("enabled", false))
	}
	return slog.GroupValue(
		slog.Bool("enabled", true),
		slog.String("ca_file", c.CAFile),
		slog.String("cert_file", c.CertFile),
		slog.String("key_file", c.KeyFile),
		slog.Bool("insecure_skip_verify", c.InsecureSkipVerify),
	)
}

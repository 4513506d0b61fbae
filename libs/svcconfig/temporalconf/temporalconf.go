// Package temporalconf reads a service's Temporal connection from <PREFIX>_TEMPORAL_*
// variables and builds the SDK's client options from it, the same way for every service that
// talks to Temporal (the cache-producer and the control-plane): the frontend address and
// namespace; TLS with the server's CA, a client certificate for mutual TLS and the server name;
// and an API key (Temporal Cloud, or a cluster with an authorizer), sent as a bearer token.
//
// The rules: TLS files are read only with TLS switched on (tlsconf); an API key is refused
// without TLS, since it would travel in clear text; the API key is a secret and never logged.
package temporalconf

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/tlsconf"
)

// Variable names, under the service's prefix.
const (
	VarHostPort              = "TEMPORAL_HOSTPORT"
	VarNamespace             = "TEMPORAL_NAMESPACE"
	VarTLS                   = "TEMPORAL_TLS"
	VarTLSCAFile             = "TEMPORAL_TLS_CA_FILE"
	VarTLSCertFile           = "TEMPORAL_TLS_CERT_FILE"
	VarTLSKeyFile            = "TEMPORAL_TLS_KEY_FILE"
	VarTLSInsecureSkipVerify = "TEMPORAL_TLS_INSECURE_SKIP_VERIFY"
	VarTLSServerName         = "TEMPORAL_TLS_SERVER_NAME"
	VarAPIKey                = "TEMPORAL_API_KEY"
	VarAPIKeyFile            = "TEMPORAL_API_KEY_FILE"
)

// DefaultNamespace is the namespace when <PREFIX>_TEMPORAL_NAMESPACE is unset.
const DefaultNamespace = "default"

// Config is a Temporal connection read from the environment.
type Config struct {
	// HostPort is the frontend's host:port; empty when the service may run without Temporal.
	HostPort  string
	Namespace string
	TLS       tlsconf.Config
	// ServerName overrides the name checked in the server's certificate (default: the host of
	// HostPort).
	ServerName string
	// APIKey is sent as "Authorization: Bearer <key>" on every call. Secret.
	APIKey string
}

// Load reads the variables under r's prefix. Errors are recorded in r.
func Load(r *envconf.Reader) Config {
	c := Config{
		Namespace: r.String(r.Name(VarNamespace), DefaultNamespace),
		TLS: tlsconf.Load(r, tlsconf.Vars{
			Enabled: VarTLS, CAFile: VarTLSCAFile, CertFile: VarTLSCertFile, KeyFile: VarTLSKeyFile,
			InsecureSkipVerify: VarTLSInsecureSkipVerify,
		}),
		ServerName: r.String(r.Name(VarTLSServerName), ""),
		APIKey:     strings.TrimSpace(r.Secret(r.Name(VarAPIKey))),
	}
	c.HostPort = r.HostPort(r.Name(VarHostPort), "")
	if path := r.File(r.Name(VarAPIKeyFile)); path != "" {
		switch b, err := os.ReadFile(path); {
		case err != nil:
			r.Fail(r.Name(VarAPIKeyFile), "cannot read %q: %v", path, err)
		case c.APIKey != "":
			r.Fail(r.Name(VarAPIKeyFile), "is set together with %s: set one", r.Name(VarAPIKey))
		default:
			c.APIKey = strings.TrimSpace(string(b))
		}
	}
	if c.APIKey != "" && !c.TLS.Enabled {
		r.Fail(r.Name(VarAPIKey), "an API key needs TLS (set %s=true): it would travel in clear text", r.Name(VarTLS))
	}
	if c.ServerName != "" && !c.TLS.Enabled {
		r.Fail(r.Name(VarTLSServerName), "is set but %s is not true", r.Name(VarTLS))
	}
	return c
}

// ClientOptions returns the SDK's client options for this connection, with logger.
func (c Config) ClientOptions(logger log.Logger) (client.Options, error) {
	o := client.Options{HostPort: c.HostPort, Namespace: c.Namespace, Logger: logger}
	t, err := c.TLS.Build()
	if err != nil {
		return client.Options{}, fmt.Errorf("temporal tls: %w", err)
	}
	if t != nil {
		if c.ServerName != "" {
			t.ServerName = c.ServerName
		}
		o.ConnectionOptions.TLS = t
	}
	if c.APIKey != "" {
		o.Credentials = client.NewAPIKeyStaticCredentials(c.APIKey)
	}
	return o, nil
}

// LogValue implements slog.LogValuer: the API key is never shown, only whether one is set.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("hostport", c.HostPort),
		slog.String("namespace", c.Namespace),
		slog.Any("tls", c.TLS),
		slog.String("tls_server_name", c.ServerName),
		slog.Bool("api_key", c.APIKey != ""),
	)
}

package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
)

// ServerVars are the variable names (suffixes under the reader's prefix) of a service's own TLS
// listener configuration.
type ServerVars struct {
	CertFile     string // e.g. TLS_CERT_FILE: the server's certificate chain (PEM)
	KeyFile      string // e.g. TLS_KEY_FILE: its key (PEM)
	ClientCAFile string // e.g. TLS_CLIENT_CA_FILE: CAs of the client certificates required (mTLS)
}

// Server is a TLS listener configuration read from the environment. TLS is on when a certificate
// is set; with a client CA, every client must present a certificate it signed (mutual TLS).
type Server struct {
	CertFile, KeyFile string
	ClientCAFile      string

	names ServerVars
}

// LoadServer reads the variables named by vars under r's prefix; the files are read and parsed
// at once, so a bad PEM stops the service at start with the variable named. Errors are recorded
// in r.
func LoadServer(r *envconf.Reader, vars ServerVars) Server {
	names := ServerVars{CertFile: r.Name(vars.CertFile), KeyFile: r.Name(vars.KeyFile), ClientCAFile: r.Name(vars.ClientCAFile)}
	s := Server{CertFile: r.File(names.CertFile), KeyFile: r.File(names.KeyFile), ClientCAFile: r.File(names.ClientCAFile), names: names}
	switch {
	case (s.CertFile == "") != (s.KeyFile == ""):
		r.Fail(names.CertFile, "%s and %s are set together", names.CertFile, names.KeyFile)
	case s.CertFile == "" && s.ClientCAFile != "":
		r.Fail(names.ClientCAFile, "is set but %s is not (client certificates need TLS)", names.CertFile)
	case s.CertFile != "":
		if _, err := s.Build(); err != nil {
			r.Add(err)
		}
	}
	return s
}

// Enabled reports whether the listener serves TLS.
func (s Server) Enabled() bool { return s.CertFile != "" }

// Build returns the crypto/tls server configuration: nil when TLS is off. Errors are
// *envconf.VarError naming the variable of the file at fault.
func (s Server) Build() (*tls.Config, error) {
	if !s.Enabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return nil, &envconf.VarError{Var: s.names.CertFile, Reason: fmt.Sprintf("load the certificate %q and key %q: %v", s.CertFile, s.KeyFile, err)}
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if s.ClientCAFile != "" {
		pem, err := os.ReadFile(s.ClientCAFile)
		if err != nil {
			return nil, &envconf.VarError{Var: s.names.ClientCAFile, Reason: fmt.Sprintf("read %q: %v", s.ClientCAFile, err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &envconf.VarError{Var: s.names.ClientCAFile, Reason: fmt.Sprintf("no PEM certificate in %q", s.ClientCAFile)}
		}
		t.ClientCAs, t.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return t, nil
}

// LogValue implements slog.LogValuer (file paths are not secret).
func (s Server) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("enabled", s.Enabled()),
		slog.String("cert_file", s.CertFile),
		slog.String("client_ca_file", s.ClientCAFile),
	)
}

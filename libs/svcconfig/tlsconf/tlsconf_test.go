package tlsconf_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/internal/tlstest"
	"github.com/distcache/distcache/libs/svcconfig/tlsconf"
)

var vars = tlsconf.Vars{Enabled: "X_TLS", CAFile: "X_TLS_CA_FILE", CertFile: "X_TLS_CERT_FILE", KeyFile: "X_TLS_KEY_FILE", InsecureSkipVerify: "X_TLS_INSECURE_SKIP_VERIFY"}

func load(env map[string]string) (tlsconf.Config, error) {
	r := envconf.New("SVC", func(k string) string { return env[k] })
	c := tlsconf.Load(r, vars)
	return c, r.Err()
}

func TestLoad(t *testing.T) {
	t.Parallel()
	f := tlstest.Write(t)
	tests := []struct {
		name        string
		env         map[string]string
		wantVar     string // "" valid
		wantCA      bool
		wantCert    bool
		wantEnabled bool
	}{
		{name: "off", env: nil},
		{name: "on, system roots", env: map[string]string{"SVC_X_TLS": "true"}, wantEnabled: true},
		{name: "CA", env: map[string]string{"SVC_X_TLS": "true", "SVC_X_TLS_CA_FILE": f.CA}, wantEnabled: true, wantCA: true},
		{name: "mutual", env: map[string]string{"SVC_X_TLS": "true", "SVC_X_TLS_CA_FILE": f.CA, "SVC_X_TLS_CERT_FILE": f.Cert, "SVC_X_TLS_KEY_FILE": f.Key},
			wantEnabled: true, wantCA: true, wantCert: true},
		{name: "CA without TLS", env: map[string]string{"SVC_X_TLS_CA_FILE": f.CA}, wantVar: "SVC_X_TLS_CA_FILE"},
		{name: "skip verify without TLS", env: map[string]string{"SVC_X_TLS_INSECURE_SKIP_VERIFY": "true"}, wantVar: "SVC_X_TLS_INSECURE_SKIP_VERIFY"},
		{name: "missing CA", env: map[string]string{"SVC_X_TLS": "true", "SVC_X_TLS_CA_FILE": "/nonexistent/ca.pem"}, wantVar: "SVC_X_TLS_CA_FILE"},
		{name: "CA not PEM", env: map[string]string{"SVC_X_TLS": "true", "SVC_X_TLS_CA_FILE": f.NotPEM}, wantVar: "SVC_X_TLS_CA_FILE"},
		{name: "cert without key", env: map[string]string{"SVC_X_TLS": "true", "SVC_X_TLS_CERT_FILE": f.Cert}, wantVar: "SVC_X_TLS_CERT_FILE"},
		{name: "cert not PEM", env: map[string]string{"SVC_X_TLS": "true", "SVC_X_TLS_CERT_FILE": f.NotPEM, "SVC_X_TLS_KEY_FILE": f.Key}, wantVar: "SVC_X_TLS_CERT_FILE"},
		{name: "bad bool", env: map[string]string{"SVC_X_TLS": "on please"}, wantVar: "SVC_X_TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env)
			if tt.wantVar != "" {
				var ve *envconf.VarError
				if !errors.As(err, &ve) || !strings.Contains(err.Error(), tt.wantVar+": ") {
					t.Fatalf("Load: %v, want a *VarError naming %s", err, tt.wantVar)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc, err := c.Build()
			if err != nil {
				t.Fatal(err)
			}
			if (tc != nil) != tt.wantEnabled {
				t.Fatalf("Build() = %v, want a config: %v", tc, tt.wantEnabled)
			}
			if tc == nil {
				return
			}
			if (tc.RootCAs != nil) != tt.wantCA || (len(tc.Certificates) == 1) != tt.wantCert {
				t.Errorf("RootCAs set %v, %d certificates; want CA %v, certificate %v", tc.RootCAs != nil, len(tc.Certificates), tt.wantCA, tt.wantCert)
			}
			if tc.MinVersion == 0 || tc.InsecureSkipVerify {
				t.Errorf("MinVersion %x, InsecureSkipVerify %v; want TLS 1.2 at least, verification on", tc.MinVersion, tc.InsecureSkipVerify)
			}
		})
	}
}

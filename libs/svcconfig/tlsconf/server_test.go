package tlsconf_test

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/internal/tlstest"
	"github.com/distcache/distcache/libs/svcconfig/tlsconf"
)

func TestLoadServer(t *testing.T) {
	t.Parallel()
	f := tlstest.Write(t)
	vars := tlsconf.ServerVars{CertFile: "TLS_CERT_FILE", KeyFile: "TLS_KEY_FILE", ClientCAFile: "TLS_CLIENT_CA_FILE"}
	for _, tc := range []struct {
		name       string
		env        map[string]string
		wantVar    string
		enabled    bool
		clientAuth tls.ClientAuthType
	}{
		{"off", nil, "", false, tls.NoClientCert},
		{"tls", map[string]string{"SVC_TLS_CERT_FILE": f.Cert, "SVC_TLS_KEY_FILE": f.Key}, "", true, tls.NoClientCert},
		{"mtls", map[string]string{"SVC_TLS_CERT_FILE": f.Cert, "SVC_TLS_KEY_FILE": f.Key, "SVC_TLS_CLIENT_CA_FILE": f.CA}, "", true, tls.RequireAndVerifyClientCert},
		{"cert without key", map[string]string{"SVC_TLS_CERT_FILE": f.Cert}, "SVC_TLS_CERT_FILE", false, 0},
		{"client CA without TLS", map[string]string{"SVC_TLS_CLIENT_CA_FILE": f.CA}, "SVC_TLS_CLIENT_CA_FILE", false, 0},
		{"cert not PEM", map[string]string{"SVC_TLS_CERT_FILE": f.NotPEM, "SVC_TLS_KEY_FILE": f.Key}, "SVC_TLS_CERT_FILE", false, 0},
		{"client CA not PEM", map[string]string{"SVC_TLS_CERT_FILE": f.Cert, "SVC_TLS_KEY_FILE": f.Key, "SVC_TLS_CLIENT_CA_FILE": f.NotPEM}, "SVC_TLS_CLIENT_CA_FILE", false, 0},
	} {
		r := envconf.New("SVC", func(k string) string { return tc.env[k] })
		s := tlsconf.LoadServer(r, vars)
		err := r.Err()
		var ve *envconf.VarError
		if tc.wantVar != "" {
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.wantVar) {
				t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.wantVar)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		cfg, err := s.Build()
		if err != nil || (cfg != nil) != tc.enabled || s.Enabled() != tc.enabled {
			t.Errorf("%s: Build = %v, %v; want enabled=%v", tc.name, cfg, err, tc.enabled)
			continue
		}
		if cfg != nil && cfg.ClientAuth != tc.clientAuth {
			t.Errorf("%s: client auth %v, want %v", tc.name, cfg.ClientAuth, tc.clientAuth)
		}
	}
}

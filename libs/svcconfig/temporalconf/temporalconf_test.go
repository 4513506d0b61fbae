package temporalconf_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/internal/tlstest"
	"github.com/distcache/distcache/libs/svcconfig/temporalconf"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

func load(env map[string]string) (temporalconf.Config, error) {
	r := envconf.New("SVC", func(k string) string { return env[k] })
	c := temporalconf.Load(r)
	return c, r.Err()
}

// TestLoadRules: an API key needs TLS, is read from a variable or a file (not both), and is
// never in the logged configuration; TLS files need TLS switched on.
func TestLoadRules(t *testing.T) {
	t.Parallel()
	f := tlstest.Write(t)
	keyFile := filepath.Join(t.TempDir(), "api-key")
	if err := os.WriteFile(keyFile, []byte("secret-api-key-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantVar string // "" for no error
	}{
		{"plain", map[string]string{"SVC_TEMPORAL_HOSTPORT": "t:7233"}, ""},
		{"tls with key file", map[string]string{"SVC_TEMPORAL_TLS": "true", "SVC_TEMPORAL_TLS_CA_FILE": f.CA, "SVC_TEMPORAL_API_KEY_FILE": keyFile}, ""},
		{"api key without tls", map[string]string{"SVC_TEMPORAL_API_KEY": "k"}, "SVC_TEMPORAL_API_KEY"},
		{"key and key file", map[string]string{"SVC_TEMPORAL_TLS": "true", "SVC_TEMPORAL_API_KEY": "k", "SVC_TEMPORAL_API_KEY_FILE": keyFile}, "SVC_TEMPORAL_API_KEY_FILE"},
		{"ca without tls", map[string]string{"SVC_TEMPORAL_TLS_CA_FILE": f.CA}, "SVC_TEMPORAL_TLS_CA_FILE"},
		{"server name without tls", map[string]string{"SVC_TEMPORAL_TLS_SERVER_NAME": "temporal"}, "SVC_TEMPORAL_TLS_SERVER_NAME"},
		{"bad hostport", map[string]string{"SVC_TEMPORAL_HOSTPORT": "nope"}, "SVC_TEMPORAL_HOSTPORT"},
	} {
		c, err := load(tc.env)
		var ve *envconf.VarError
		switch {
		case tc.wantVar == "" && err != nil:
			t.Errorf("%s: %v, want no error", tc.name, err)
		case tc.wantVar != "" && (!errors.As(err, &ve) || !strings.Contains(err.Error(), tc.wantVar)):
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.wantVar)
		}
		if tc.name == "tls with key file" && c.APIKey != "secret-api-key-from-file" {
			t.Errorf("%s: API key %q, want the file's", tc.name, c.APIKey)
		}
		var logged strings.Builder
		slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "temporal", c)
		if strings.Contains(logged.String(), "secret-api-key") {
			t.Errorf("%s: the API key is in the logged configuration: %s", tc.name, logged.String())
		}
	}
}

// frontend is a Temporal frontend stand-in behind real TLS: it answers GetSystemInfo (the call
// client.Dial makes) and records the authorization header it was sent.
type frontend struct {
	workflowservice.UnimplementedWorkflowServiceServer
	mu   sync.Mutex
	auth []string
}

func (f *frontend) GetSystemInfo(ctx context.Context, _ *workflowservice.GetSystemInfoRequest) (*workflowservice.GetSystemInfoResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.auth = append(f.auth, md.Get("authorization")...)
	f.mu.Unlock()
	return &workflowservice.GetSystemInfoResponse{}, nil
}

// TestClientOptionsMutualTLSAndAPIKey: the options built from the variables make a real TLS
// handshake with a server that requires a client certificate signed by its CA, and send the API
// key as a bearer token; without the client certificate the server refuses the connection.
func TestClientOptionsMutualTLSAndAPIKey(t *testing.T) {
	t.Parallel()
	f := tlstest.Write(t)
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	srvTLS := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fe := &frontend{}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)))
	workflowservice.RegisterWorkflowServiceServer(gs, fe)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)

	dial := func(env map[string]string) error {
		c, err := load(env)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := c.ClientOptions(tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl, err := client.DialContext(ctx, opts)
		if err == nil {
			cl.Close()
		}
		return err
	}
	env := map[string]string{
		"SVC_TEMPORAL_HOSTPORT": l.Addr().String(), "SVC_TEMPORAL_TLS": "true", "SVC_TEMPORAL_TLS_CA_FILE": f.CA,
		"SVC_TEMPORAL_TLS_CERT_FILE": f.Cert, "SVC_TEMPORAL_TLS_KEY_FILE": f.Key, "SVC_TEMPORAL_API_KEY": "cloud-api-key-1",
	}
	if err := dial(env); err != nil {
		t.Fatalf("dial with mutual TLS and an API key: %v", err)
	}
	fe.mu.Lock()
	auth := append([]string(nil), fe.auth...)
	fe.mu.Unlock()
	if len(auth) == 0 || auth[0] != "Bearer cloud-api-key-1" {
		t.Errorf("authorization sent: %q, want Bearer cloud-api-key-1", auth)
	}

	delete(env, "SVC_TEMPORAL_TLS_CERT_FILE")
	delete(env, "SVC_TEMPORAL_TLS_KEY_FILE")
	if err := dial(env); err == nil {
		t.Error("dial without the client certificate succeeded, want the server to refuse it")
	}
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestMutualTLS: with CONTROLPLANE_TLS_CERT_FILE, _KEY_FILE and _CLIENT_CA_FILE the control-plane
// serves gRPC and REST over TLS and requires a client certificate: a client with the certificate
// (and the token) is served on both; without it gRPC is refused at the handshake and REST /v1/
// answers 401, while /healthz and /readyz (Kubernetes' probes present no certificate) answer; the
// REST gateway still reaches the service (in process).
func TestMutualTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	files := devstacktest.TLSFiles(t)
	env := serviceEnv(devstacktest.Database(t), devstacktest.Redis(t).Addr, "127.0.0.1:1", // down: reads still answer
		"CONTROLPLANE_MODELS", "users=id,email",
		"CONTROLPLANE_TLS_CERT_FILE", files.CertFile,
		"CONTROLPLANE_TLS_KEY_FILE", files.KeyFile,
		"CONTROLPLANE_TLS_CLIENT_CA_FILE", files.CAFile,
	)
	l, logs, stop := startService(ctx, t, env)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()

	caPEM, err := os.ReadFile(files.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	noCert := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}

	get := func(cfg *tls.Config) (int, error) {
		cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+l.http.Addr().String()+"/v1/projections", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := cl.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(withCert); err != nil || code != http.StatusOK {
		t.Fatalf("REST over mutual TLS: %d, %v; want 200\n%s", code, err, logs)
	}
	if code, err := get(noCert); err != nil || code != http.StatusUnauthorized {
		t.Errorf("REST /v1/ without a client certificate: %d, %v; want 401", code, err)
	}
	// Kubernetes' probes present no certificate: /healthz and /readyz stay reachable.
	probe := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: noCert}}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := probe.Get("https://" + l.http.Addr().String() + path)
		if err != nil {
			t.Errorf("%s without a client certificate: %v, want it answered", path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s without a client certificate: %d, want 200", path, resp.StatusCode)
		}
	}
	if resp, err := http.Get("http://" + l.http.Addr().String() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP on the TLS listener: %d, want 400 (Go's answer to HTTP on an HTTPS port)", resp.StatusCode)
		}
	}

	call := func(cfg *tls.Config) error {
		conn, err := grpc.NewClient(l.grpc.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken), 10*time.Second)
		defer ccancel()
		_, err = pb.NewControlPlaneClient(conn).ListProjections(cctx, &pb.ListProjectionsRequest{})
		return err
	}
	if err := call(withCert); err != nil {
		t.Errorf("gRPC over mutual TLS: %v", err)
	}
	if err := call(noCert); err == nil {
		t.Error("gRPC without a client certificate was served, want it refused")
	}
}

// Package server puts the control-plane's API on the network: a gRPC server (auth, metrics and
// logging interceptors) and an HTTP handler serving the same API as REST/JSON through
// grpc-gateway, the OpenAPI document, /healthz, /readyz ("ready", "degraded" or "unavailable")
// and /metrics.
//
// The gateway calls the gRPC server over its own client connection, so every REST call passes
// the same interceptors as a gRPC call; the HTTP layer also refuses a request without a valid
// token before the gateway sees it.
package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/services/control-plane/internal/auth"
	"github.com/distcache/distcache/services/control-plane/internal/cpmetrics"
)

// MaxBodyBytes bounds a REST request body.
const MaxBodyBytes = 1 << 20

// Options configure the servers.
type Options struct {
	Service pb.ControlPlaneServer
	Tokens  *auth.Tokens
	Logger  *slog.Logger
	Metrics *cpmetrics.Metrics
	// Gatherer serves /metrics (nil: no /metrics).
	Gatherer prometheus.Gatherer
	// Ready answers /readyz: nil error when the dependencies are reachable.
	Ready func(ctx context.Context) error
	// Degraded, when set and returning an error while Ready passes, makes /readyz answer 200
	// with "status": "degraded" and the error: the service serves reads but not every call
	// (Temporal down: no workflow can start).
	Degraded func(ctx context.Context) error
	// OpenAPI is the OpenAPI document served at /openapi.json (nil: not served).
	OpenAPI []byte
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// NewGRPC returns the gRPC server with the service registered.
func NewGRPC(o Options) *grpc.Server {
	log := o.logger()
	observe := func(ctx context.Context, method string, start time.Time, err error) {
		code := status.Code(err)
		if o.Metrics != nil {
			o.Metrics.Requests.WithLabelValues(method, code.String()).Inc()
			o.Metrics.Duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
		}
		// Never log metadata: it carries the bearer token.
		log.LogAttrs(ctx, slog.LevelDebug, "rpc", slog.String("method", method),
			slog.String("code", code.String()), slog.Duration("duration", time.Since(start)))
	}
	unaryObserve := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		observe(ctx, info.FullMethod, start, err)
		return resp, err
	}
	streamObserve := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		start := time.Now()
		err := h(srv, ss)
		observe(ss.Context(), info.FullMethod, start, err)
		return err
	}
	s := grpc.NewServer(
		grpc.ChainUnaryInterceptor(unaryObserve, o.Tokens.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(streamObserve, o.Tokens.StreamInterceptor()),
	)
	pb.RegisterControlPlaneServer(s, o.Service)
	return s
}

// Marshaler is the gateway's JSON: field names as in the .proto (snake_case), every field
// written, unknown fields in a request refused, and a body that does not decode reported with
// the field at fault.
func Marshaler() runtime.Marshaler {
	return fieldNamingJSON{&runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: unmarshalOptions,
	}}
}

// NewHTTP returns the HTTP handler: the REST gateway (calling the gRPC server at grpcAddr) behind
// the token middleware, plus the unauthenticated /healthz, /readyz, /metrics and /openapi.json.
// The gateway's client connection is closed when ctx ends.
func NewHTTP(ctx context.Context, o Options, grpcAddr string) (http.Handler, error) {
	gw := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, Marshaler()))
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("gateway client: %w", err)
	}
	go func() {
		<-ctx.Done()
		_ = conn.Close()
	}()
	if err := pb.RegisterControlPlaneHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("register gateway: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", http.MaxBytesHandler(o.Tokens.Middleware(gw), MaxBodyBytes))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if o.Ready != nil {
			rctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := o.Ready(rctx); err != nil {
				o.logger().Warn("not ready", "err", err)
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
				return
			}
		}
		if o.Degraded != nil {
			if err := o.Degraded(r.Context()); err != nil {
				writeJSON(w, http.StatusOK, map[string]string{"status": "degraded", "error": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	if o.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	}
	if o.OpenAPI != nil {
		mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(o.OpenAPI)
		})
	}
	return mux, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

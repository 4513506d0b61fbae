// Package server puts the control-plane's API on the network: a gRPC server (panic recovery,
// auth, metrics and logging interceptors) and an HTTP handler serving the same API as REST/JSON
// through grpc-gateway, the OpenAPI document, /healthz, /readyz ("ok", "degraded: <component>"
// or "not ready: <component>", never an error's text) and /metrics.
//
// The gateway calls the gRPC server over its own client connection, so every REST call passes
// the same interceptors as a gRPC call; the HTTP layer also refuses a request without a valid
// token, or with a body over MaxBodyBytes (413), before the gateway sees it.
//
// Internal errors never reach a caller with their text: a handler's panic, or an INTERNAL,
// UNKNOWN or DATA_LOSS status, is answered "internal error (request id …)" and the text is logged
// with that id; every call's id travels back in the x-request-id header (REST:
// Grpc-Metadata-X-Request-Id). A 5xx the gateway makes itself (the gRPC server unreachable) is
// answered the same way.
package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
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
	// Ready are /readyz's checks by component name ("registry", "redis"): one failing makes it
	// answer 503 "not ready: <component>".
	Ready map[string]func(ctx context.Context) error
	// Degraded are the checks of components the service can do without for a while: one
	// failing while Ready passes makes /readyz answer 200 "degraded: <component>": the service
	// serves reads but not every call (Temporal down: no workflow can start).
	Degraded map[string]func(ctx context.Context) error
	// OpenAPI is the OpenAPI document served at /openapi.json (nil: not served).
	OpenAPI []byte
	// TLS, when set, is the gRPC server's TLS configuration (NewGRPC); with it, the REST gateway
	// reaches the gRPC service in process (NewInternalGRPC) instead of over the network. The
	// HTTP listener's TLS is the caller's (a tls.Listener over the same configuration).
	TLS *tls.Config
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
	g := guard{log: log, metrics: o.Metrics}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unaryObserve, g.unary, o.Tokens.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(streamObserve, g.stream, o.Tokens.StreamInterceptor()),
	}
	if o.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	s := grpc.NewServer(opts...)
	pb.RegisterControlPlaneServer(s, o.Service)
	return s
}

// NewInternalGRPC returns the gRPC server the REST gateway calls when the public one serves TLS
// (Options.TLS): the same service and interceptors (the caller's bearer token is still checked),
// without TLS, served on an in-process listener (NewMemListener) that nothing outside the
// process can reach.
func NewInternalGRPC(o Options) *grpc.Server {
	o.TLS = nil
	return NewGRPC(o)
}

// HeaderRequestID is the response header (gRPC metadata) that carries a call's request id; the
// gateway forwards it as Grpc-Metadata-X-Request-Id.
const HeaderRequestID = "x-request-id"

// msgInternal is what a caller learns of an internal error.
const msgInternal = "internal error"

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// internal reports whether a status code stands for a failure inside the service, whose message
// may hold internal detail (addresses, SQL, wrapped errors).
func internal(c codes.Code) bool {
	return c == codes.Internal || c == codes.Unknown || c == codes.DataLoss
}

// guard is the outermost handler wrapper but one (metrics and logging see what it answers): it
// gives every call a request id (header x-request-id), turns a handler's panic into INTERNAL
// (logged with the stack, counted in distcache_controlplane_panics_total; the process lives
// on), and replaces the message of an INTERNAL, UNKNOWN or DATA_LOSS answer with
// "internal error (request id …)", logging the original with that id.
type guard struct {
	log     *slog.Logger
	metrics *cpmetrics.Metrics
}

func (g guard) finish(ctx context.Context, method, id string, recovered any, err error) error {
	if recovered != nil {
		if g.metrics != nil {
			g.metrics.Panics.WithLabelValues(method).Inc()
		}
		g.log.LogAttrs(ctx, slog.LevelError, "handler panicked", slog.String("method", method),
			slog.String("request_id", id), slog.Any("panic", recovered), slog.String("stack", string(debug.Stack())))
		return status.Errorf(codes.Internal, "%s (request id %s)", msgInternal, id)
	}
	if st, ok := status.FromError(err); ok && err != nil && internal(st.Code()) {
		g.log.LogAttrs(ctx, slog.LevelError, "internal error", slog.String("method", method),
			slog.String("request_id", id), slog.String("code", st.Code().String()), slog.String("err", st.Message()))
		return status.Errorf(st.Code(), "%s (request id %s)", msgInternal, id)
	}
	return err
}

func (g guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	id := newRequestID()
	_ = grpc.SetHeader(ctx, metadata.Pairs(HeaderRequestID, id))
	defer func() {
		r := recover()
		if r != nil {
			resp = nil
		}
		err = g.finish(ctx, info.FullMethod, id, r, err)
	}()
	return h(ctx, req)
}

func (g guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	id := newRequestID()
	_ = ss.SetHeader(metadata.Pairs(HeaderRequestID, id))
	defer func() {
		err = g.finish(ss.Context(), info.FullMethod, id, recover(), err)
	}()
	return h(srv, ss)
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
	return newHTTP(ctx, o, grpcAddr)
}

// NewHTTPInProcess is NewHTTP with the gateway calling the gRPC server served on l
// (NewMemListener), for a service whose public gRPC listener serves TLS.
func NewHTTPInProcess(ctx context.Context, o Options, l *MemListener) (http.Handler, error) {
	return newHTTP(ctx, o, "passthrough:///in-process", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return l.DialContext(ctx)
	}))
}

func newHTTP(ctx context.Context, o Options, grpcAddr string, dial ...grpc.DialOption) (http.Handler, error) {
	gw := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, Marshaler()),
		runtime.WithErrorHandler(gatewayErrors(o.logger())), runtime.WithRoutingErrorHandler(routingError))
	conn, err := grpc.NewClient(grpcAddr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
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
	mux.Handle("/v1/", o.Tokens.Middleware(screen(gw)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if down := o.failing(rctx, o.Ready); len(down) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready: " + strings.Join(down, ", ")})
			return
		}
		if down := o.failing(rctx, o.Degraded); len(down) > 0 {
			writeJSON(w, http.StatusOK, map[string]string{"status": "degraded: " + strings.Join(down, ", ")})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
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

// failing runs checks in name order and returns the names of those that fail; their errors are
// logged, never answered.
func (o Options) failing(ctx context.Context, checks map[string]func(context.Context) error) []string {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	// At once, each with the whole deadline: one after the other, a dependency that hangs (Redis
	// stopped) would use the deadline up and the next check (the registry) would fail too. A check
	// still running shortly after the deadline (one that ignores its context) counts as failing.
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(names)) // buffered: a late check never blocks
	for i, n := range names {
		go func() { results <- result{i, checks[n](ctx)} }()
	}
	failed := make([]bool, len(names))
	for i := range failed {
		failed[i] = true
	}
	done := ctx.Done()
	var late <-chan time.Time
wait:
	for pending := len(names); pending > 0; {
		select {
		case r := <-results:
			pending--
			if r.err != nil {
				o.logger().Warn("readiness check failed", "component", names[r.i], "err", r.err)
				continue
			}
			failed[r.i] = false
		case <-done:
			done, late = nil, time.After(100*time.Millisecond)
		case <-late:
			o.logger().Warn("readiness checks did not answer within the deadline", "pending", pending)
			break wait
		}
	}
	var down []string
	for i, n := range names {
		if failed[i] {
			down = append(down, n)
		}
	}
	return down
}

// screen refuses what the gateway would turn into a 5xx or read without bound, in the
// gateway's error shape: a path or query that is not UTF-8 (a protobuf string must be; the
// gateway's client would fail to marshal it, INTERNAL) is answered 400; the body is read, up to
// MaxBodyBytes, before the gateway sees it, and a larger one (declared or sent in chunks) is
// answered 413.
func screen(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !validURL(r) {
			writeJSON(w, http.StatusBadRequest, map[string]any{"code": int(codes.InvalidArgument), "message": "the request's path or query is not valid UTF-8", "details": []any{}})
			return
		}
		if r.ContentLength <= MaxBodyBytes {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
			var tooLarge *http.MaxBytesError
			switch {
			case errors.As(err, &tooLarge):
			case err != nil:
				writeJSON(w, http.StatusBadRequest, map[string]any{"code": int(codes.InvalidArgument), "message": "could not read the request body", "details": []any{}})
				return
			default:
				r.Body = io.NopCloser(bytes.NewReader(body))
				next.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"code": int(codes.InvalidArgument),
			"message": fmt.Sprintf("request body over %d bytes", MaxBodyBytes), "details": []any{}})
	})
}

// validURL reports whether the request's decoded path and query parameters are UTF-8.
func validURL(r *http.Request) bool {
	if !utf8.ValidString(r.URL.Path) {
		return false
	}
	for k, vs := range r.URL.Query() {
		if !utf8.ValidString(k) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

// routingError answers a request no route takes with its own status (404, 405), not the 501
// grpc-gateway's default makes of a 405; a 405 carries the Allow header RFC 9110 asks for
// (grpc-gateway sets none), naming the methods the path's routes take.
func routingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
	c := codes.NotFound
	switch code {
	case http.StatusMethodNotAllowed:
		c = codes.Unimplemented
		w.Header().Set("Allow", strings.Join(AllowedMethods(r.URL.Path), ", "))
	case http.StatusBadRequest:
		c = codes.InvalidArgument
	}
	writeJSON(w, code, map[string]any{"code": int(c), "message": http.StatusText(code), "details": []any{}})
}

// restRoute is one path template of the REST API with the methods it takes.
type restRoute struct {
	segments []string // "{name}" matches any one segment
	verb     string   // after ':' in the last segment ("cutover"), or ""
	methods  []string
}

// restRoutes are the gateway's routes, read from the OpenAPI document (pb.OpenAPI), which
// protoc-gen-openapiv2 generates from the same HTTP rules as the gateway's code, so the two
// cannot disagree.
var restRoutes = sync.OnceValues(func() ([]restRoute, error) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(pb.OpenAPI, &doc); err != nil {
		return nil, fmt.Errorf("read the OpenAPI document's paths: %w", err)
	}
	var out []restRoute
	for path, ops := range doc.Paths {
		rt := restRoute{segments: strings.Split(strings.TrimPrefix(path, "/"), "/")}
		last := &rt.segments[len(rt.segments)-1]
		if i := strings.LastIndex(*last, "}:"); i >= 0 {
			*last, rt.verb = (*last)[:i+1], (*last)[i+2:]
		}
		for m := range ops {
			if m := strings.ToUpper(m); slices.Contains(methodOrder, m) {
				rt.methods = append(rt.methods, m)
			}
		}
		out = append(out, rt)
	}
	return out, nil
})

// methodOrder is the order methods are listed in an Allow header.
var methodOrder = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}

// match reports whether path takes rt, as grpc-gateway matches: a template with a verb needs the
// last segment to end in ":verb", one without takes the whole segment (colon included).
func (rt restRoute) match(segments []string) bool {
	if len(segments) != len(rt.segments) {
		return false
	}
	if rt.verb != "" {
		last, ok := strings.CutSuffix(segments[len(segments)-1], ":"+rt.verb)
		if !ok || last == "" {
			return false
		}
		segments = append(slices.Clone(segments[:len(segments)-1]), last)
	}
	for i, s := range rt.segments {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			if segments[i] == "" {
				return false
			}
			continue
		}
		if segments[i] != s {
			return false
		}
	}
	return true
}

// AllowedMethods returns the methods the REST API takes on path, in a fixed order; none for a
// path no route takes.
func AllowedMethods(path string) []string {
	routes, err := restRoutes()
	if err != nil {
		return nil
	}
	segments := strings.Split(strings.TrimPrefix(path, "/"), "/")
	seen := map[string]bool{}
	for _, rt := range routes {
		if rt.match(segments) {
			for _, m := range rt.methods {
				seen[m] = true
			}
		}
	}
	var out []string
	for _, m := range methodOrder {
		if seen[m] {
			out = append(out, m)
		}
	}
	return out
}

// gatewayErrors is the gateway's error handler. An answer of the gRPC server (it carries the
// x-request-id header) was guarded already and is written as grpc-gateway writes it. An error
// the gateway made itself (the gRPC server unreachable, a response it could not forward) that
// maps to a 5xx is answered with the code and "internal error (request id …)" only, and the
// detail is logged.
func gatewayErrors(log *slog.Logger) runtime.ErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
		md, _ := runtime.ServerMetadataFromContext(ctx)
		fromServer := len(md.HeaderMD.Get(HeaderRequestID)) > 0 || len(md.TrailerMD.Get(HeaderRequestID)) > 0
		st := status.Convert(err)
		if !fromServer && runtime.HTTPStatusFromCode(st.Code()) >= 500 {
			id := newRequestID()
			log.LogAttrs(ctx, slog.LevelError, "gateway error", slog.String("path", r.URL.Path),
				slog.String("request_id", id), slog.String("code", st.Code().String()), slog.String("err", st.Message()))
			err = status.Errorf(st.Code(), "%s (request id %s)", msgInternal, id)
		}
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
	}
}

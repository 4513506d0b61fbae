package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/services/control-plane/internal/server"
)

// secretDetail stands for what an internal error may carry: an address, a user, SQL.
const secretDetail = "dial 10.9.8.7:5432: password authentication failed for user registry_admin"

// faultyService is the real API service except GetProjection, which panics or fails with an
// INTERNAL status holding secretDetail, by the projection's name.
type faultyService struct {
	pb.ControlPlaneServer
}

func (f faultyService) GetProjection(ctx context.Context, r *pb.GetProjectionRequest) (*pb.Projection, error) {
	switch r.GetName() {
	case "panics":
		panic("nil map write near " + secretDetail)
	case "internal":
		return nil, status.Error(codes.Internal, secretDetail)
	case "unknown":
		return nil, status.Error(codes.Unknown, secretDetail)
	}
	return f.ControlPlaneServer.GetProjection(ctx, r)
}

func faulty(s *stackSetup) {
	s.wrap = func(svc pb.ControlPlaneServer) pb.ControlPlaneServer { return faultyService{svc} }
	// A server-streaming method of a test-only service whose handler panics.
	s.register = func(gs *grpc.Server) {
		gs.RegisterService(&grpc.ServiceDesc{
			ServiceName: "distcache.test.Panics",
			HandlerType: (*any)(nil),
			Streams: []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true,
				Handler: func(any, grpc.ServerStream) error { panic("stream handler: " + secretDetail) }}},
		}, struct{}{})
	}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(withToken("Bearer "+goodToken), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestHandlerPanicRecovered: a handler that panics, called over real gRPC (unary and stream) and
// through the REST gateway, answers INTERNAL "internal error (request id …)" without the panic's
// text; the panic is logged with its stack and counted; the server goes on serving.
func TestHandlerPanicRecovered(t *testing.T) {
	t.Parallel()
	st := startStack(t, faulty)

	var hdr metadata.MD
	_, err := st.client.GetProjection(callCtx(t), &pb.GetProjectionRequest{Name: "panics"}, grpc.Header(&hdr))
	s := status.Convert(err)
	if s.Code() != codes.Internal || !strings.HasPrefix(s.Message(), "internal error (request id ") || strings.Contains(s.Message(), "10.9.8.7") {
		t.Errorf("unary panic: %v, want INTERNAL \"internal error (request id …)\" without the panic's text", err)
	}
	ids := hdr.Get(server.HeaderRequestID)
	if len(ids) != 1 || !strings.Contains(s.Message(), ids[0]) {
		t.Errorf("request id header %v, want one id, the one in the message %q", ids, s.Message())
	}

	stream, err := st.conn.NewStream(callCtx(t), &grpc.StreamDesc{ServerStreams: true}, "/distcache.test.Panics/Stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var out struct{}
	err = stream.RecvMsg(&out)
	if s := status.Convert(err); s.Code() != codes.Internal || strings.Contains(s.Message(), "10.9.8.7") {
		t.Errorf("stream panic: %v, want INTERNAL without the panic's text", err)
	}

	code, _, body := st.do(t, "GET", "/v1/projections/panics", "Bearer "+goodToken, nil)
	if code != http.StatusInternalServerError || !strings.Contains(string(body), "internal error") || strings.Contains(string(body), "10.9.8.7") {
		t.Errorf("REST panic: %d %s, want 500 internal error without the panic's text", code, body)
	}

	if got := testutil.ToFloat64(st.metrics.Panics.WithLabelValues("/distcache.v1.ControlPlane/GetProjection")); got != 2 {
		t.Errorf("panics counted for GetProjection: %v, want 2 (gRPC and REST)", got)
	}
	if got := testutil.ToFloat64(st.metrics.Panics.WithLabelValues("/distcache.test.Panics/Stream")); got != 1 {
		t.Errorf("panics counted for the stream: %v, want 1", got)
	}
	logs := st.logs.String()
	if !strings.Contains(logs, "handler panicked") || !strings.Contains(logs, "goroutine") || !strings.Contains(logs, ids[0]) {
		t.Errorf("log lacks the panic with its stack and request id %s:\n%s", ids[0], logs)
	}

	// The process lives on: a normal call still works.
	if _, err := st.client.ListProjections(callCtx(t), &pb.ListProjectionsRequest{}); err != nil {
		t.Errorf("a call after the panics: %v", err)
	}
}

// TestInternalErrorHidden: an INTERNAL or UNKNOWN status from the service reaches neither a gRPC
// nor a REST caller with its text; the log holds the text under the request id the caller got.
func TestInternalErrorHidden(t *testing.T) {
	t.Parallel()
	st := startStack(t, faulty)
	for _, name := range []string{"internal", "unknown"} {
		_, err := st.client.GetProjection(callCtx(t), &pb.GetProjectionRequest{Name: name})
		s := status.Convert(err)
		if s.Code() == codes.OK || strings.Contains(s.Message(), "registry_admin") || !strings.HasPrefix(s.Message(), "internal error (request id ") {
			t.Errorf("gRPC %s: %v, want \"internal error (request id …)\" only", name, err)
		}
		code, hdr, body := st.do(t, "GET", "/v1/projections/"+name, "Bearer "+goodToken, nil)
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &e)
		id := hdr.Get("Grpc-Metadata-X-Request-Id")
		if code != http.StatusInternalServerError || strings.Contains(string(body), "registry_admin") || id == "" || !strings.Contains(e.Message, id) {
			t.Errorf("REST %s: %d %s (request id header %q), want 500 \"internal error (request id <the header's>)\"", name, code, body, id)
		}
		if !strings.Contains(st.logs.String(), id) || !strings.Contains(st.logs.String(), "registry_admin") {
			t.Errorf("REST %s: the log lacks the error's text under request id %s", name, id)
		}
	}
}

// TestGatewayErrorHidden: when the gateway cannot reach the gRPC server, the 5xx it answers names
// no address or transport detail.
func TestGatewayErrorHidden(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there any more
	st := startStack(t, func(s *stackSetup) { s.gatewayTarget = dead })
	code, _, body := st.do(t, "GET", "/v1/projections", "Bearer "+goodToken, nil)
	_, port, _ := net.SplitHostPort(dead)
	if code < 500 || strings.Contains(string(body), port) || strings.Contains(string(body), "dial") || !strings.Contains(string(body), "internal error") {
		t.Errorf("gateway without its gRPC server: %d %s, want a 5xx saying \"internal error\" and naming no address", code, body)
	}
}

// TestBodyLimit: a REST body over server.MaxBodyBytes is answered 413 whether its length is
// declared or it comes in chunks; one just under it reaches the API (400: not a valid projection).
func TestBodyLimit(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	big := bytes.Repeat([]byte(" "), server.MaxBodyBytes+1)
	if code, _, body := st.do(t, "POST", "/v1/projections", "Bearer "+goodToken, big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("declared length over the limit: %d %s, want 413", code, body)
	}
	req, err := http.NewRequest("POST", st.baseURL+"/v1/projections", struct{ *bytes.Reader }{bytes.NewReader(big)})
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+goodToken)
	req.ContentLength = -1 // chunked
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over the limit: %d, want 413", resp.StatusCode)
	}
	small := append([]byte(`{"projection":{"name":"x"}}`), bytes.Repeat([]byte(" "), server.MaxBodyBytes-100)...)
	if code, _, body := st.do(t, "POST", "/v1/projections", "Bearer "+goodToken, small); code != http.StatusBadRequest {
		t.Errorf("body under the limit: %d %s, want 400 from the API's validation", code, body)
	}
}

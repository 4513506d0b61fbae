package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const token = "alpha-token-0123456789"

// TestMiddlewareGatewayShape: a refused REST request gets 401 with grpc-gateway's error body
// (code 16, the reason) and never reaches the gateway.
func TestMiddlewareGatewayShape(t *testing.T) {
	t.Parallel()
	reached := 0
	h := NewTokens([]string{token}).Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached++ }))
	for _, authz := range []string{"", "Bearer wrong-token-0123456789", "Bearer " + token} {
		r := httptest.NewRequest("GET", "/v1/projections", nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if authz == "Bearer "+token {
			if w.Code != 200 {
				t.Errorf("valid token: %d, want 200", w.Code)
			}
			continue
		}
		var body struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != 401 || body.Code != int(codes.Unauthenticated) || body.Message == "" {
			t.Errorf("Authorization %q: %d %s, want 401 {code 16, message}", authz, w.Code, w.Body)
		}
	}
	if reached != 1 {
		t.Errorf("handler reached %d times, want 1", reached)
	}
}

// TestInterceptors: gRPC calls need exactly one valid authorization value.
func TestInterceptors(t *testing.T) {
	t.Parallel()
	tk := NewTokens([]string{token})
	unary := tk.UnaryInterceptor()
	stream := tk.StreamInterceptor()
	tests := []struct {
		md   metadata.MD
		want codes.Code
	}{
		{md: nil, want: codes.Unauthenticated},
		{md: metadata.Pairs("authorization", "Bearer nope-nope-nope-nope"), want: codes.Unauthenticated},
		{md: metadata.Pairs("authorization", "Bearer "+token, "authorization", "Bearer "+token), want: codes.Unauthenticated},
		{md: metadata.Pairs("authorization", "Bearer "+token), want: codes.OK},
	}
	for _, tt := range tests {
		ctx := metadata.NewIncomingContext(context.Background(), tt.md)
		_, err := unary(ctx, nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) { return "ok", nil })
		if got := status.Code(err); got != tt.want {
			t.Errorf("unary, metadata %v: %v, want %v", tt.md, got, tt.want)
		}
		err = stream(nil, fakeStream{ctx: ctx}, &grpc.StreamServerInfo{}, func(any, grpc.ServerStream) error { return nil })
		if got := status.Code(err); got != tt.want {
			t.Errorf("stream, metadata %v: %v, want %v", tt.md, got, tt.want)
		}
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

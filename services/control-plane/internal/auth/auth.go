// Package auth puts the bearer tokens of the control-plane's API (libs/svcconfig/apitoken: digests,
// constant-time comparison, never logged) on gRPC (unary and stream interceptors) and on HTTP (a
// middleware in front of grpc-gateway, so a request without a valid token never reaches the
// gateway).
package auth

import (
	"context"
	"encoding/json"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/distcache/distcache/libs/svcconfig/apitoken"
)

// Tokens is the set of accepted bearer tokens.
type Tokens struct {
	set *apitoken.Tokens
}

// NewTokens returns the set of the given tokens. It panics on none: an API with no token would
// accept everybody, which configuration validation already refuses.
func NewTokens(tokens []string) *Tokens {
	if len(tokens) == 0 {
		panic("auth: no tokens")
	}
	return &Tokens{set: apitoken.New(tokens)}
}

func (t *Tokens) checkContext(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if err := t.set.CheckValues(md.Get("authorization")); err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return nil
}

// UnaryInterceptor refuses calls without a valid token with codes.Unauthenticated.
func (t *Tokens) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := t.checkContext(ctx); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor refuses streams without a valid token with codes.Unauthenticated.
func (t *Tokens) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := t.checkContext(ss.Context()); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// Middleware refuses HTTP requests without a valid token with 401 and a JSON body in the shape
// grpc-gateway uses for errors ({"code":16,"message":...}).
func (t *Tokens) Middleware(next http.Handler) http.Handler {
	return t.set.Middleware("distcache-control-plane", func(w http.ResponseWriter, err error) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"code":    int(codes.Unauthenticated),
			"message": err.Error(),
			"details": []any{},
		})
	}, next)
}

// Package auth checks the bearer tokens of the control-plane's API, on gRPC (unary and stream
// interceptors) and on HTTP (a middleware in front of grpc-gateway, so a request without a valid
// token never reaches the gateway). Tokens are compared in constant time and never logged.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Errors of Check. Their text is safe to return to a caller: it never holds the token.
var (
	ErrMissingToken = errors.New("missing bearer token")
	ErrBadToken     = errors.New("invalid bearer token")
)

// Tokens is a set of accepted bearer tokens, stored as SHA-256 digests so every comparison is of
// equal length and takes the same time whichever token (if any) matches.
type Tokens struct {
	digests [][sha256.Size]byte
}

// NewTokens returns the set of the given tokens. It panics on none: an API with no token would
// accept nobody, which configuration validation already refuses.
func NewTokens(tokens []string) *Tokens {
	if len(tokens) == 0 {
		panic("auth: no tokens")
	}
	t := &Tokens{}
	for _, tok := range tokens {
		t.digests = append(t.digests, sha256.Sum256([]byte(tok)))
	}
	return t
}

// Valid reports whether token is one of the set, in time independent of which one matches.
func (t *Tokens) Valid(token string) bool {
	d := sha256.Sum256([]byte(token))
	ok := 0
	for i := range t.digests {
		ok |= subtle.ConstantTimeCompare(d[:], t.digests[i][:])
	}
	return ok == 1
}

// Check validates an Authorization value ("Bearer <token>", scheme case-insensitive).
func (t *Tokens) Check(authorization string) error {
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		if authorization == "" {
			return ErrMissingToken
		}
		return ErrBadToken
	}
	if !t.Valid(strings.TrimSpace(token)) {
		return ErrBadToken
	}
	return nil
}

func (t *Tokens) checkContext(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, ErrMissingToken.Error())
	}
	if len(vals) > 1 {
		return status.Error(codes.Unauthenticated, "more than one authorization value")
	}
	if err := t.Check(vals[0]); err != nil {
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values("Authorization")
		var err error
		switch len(vals) {
		case 0:
			err = ErrMissingToken
		case 1:
			err = t.Check(vals[0])
		default:
			err = errors.New("more than one Authorization header")
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="distcache-control-plane"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"code":    int(codes.Unauthenticated),
				"message": err.Error(),
				"details": []any{},
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}

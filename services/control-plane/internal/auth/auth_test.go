package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	tk := NewTokens([]string{"alpha-token-0123456789", "beta-token-0123456789"})
	tests := []struct {
		authz string
		want  error
	}{
		{authz: "Bearer alpha-token-0123456789", want: nil},
		{authz: "bearer beta-token-0123456789", want: nil},
		{authz: "  Bearer   alpha-token-0123456789  ", want: nil},
		{authz: "", want: ErrMissingToken},
		{authz: "Bearer", want: ErrBadToken},
		{authz: "Bearer ", want: ErrBadToken},
		{authz: "alpha-token-0123456789", want: ErrBadToken},
		{authz: "Basic alpha-token-0123456789", want: ErrBadToken},
		{authz: "Bearer alpha-token-012345678", want: ErrBadToken},
		{authz: "Bearer alpha-token-01234567890", want: ErrBadToken},
		{authz: "Bearer gamma-token-0123456789", want: ErrBadToken},
	}
	for _, tt := range tests {
		if got := tk.Check(tt.authz); !errors.Is(got, tt.want) {
			t.Errorf("Check(%q) = %v, want %v", tt.authz, got, tt.want)
		}
	}
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	tk := NewTokens([]string{"alpha-token-0123456789"})
	reached := 0
	h := tk.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { reached++ }))
	tests := []struct {
		headers []string
		want    int
	}{
		{headers: nil, want: 401},
		{headers: []string{"Bearer wrong-token-0123456789"}, want: 401},
		{headers: []string{"Bearer alpha-token-0123456789", "Bearer alpha-token-0123456789"}, want: 401},
		{headers: []string{"Bearer alpha-token-0123456789"}, want: 200},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/v1/projections", nil)
		for _, v := range tt.headers {
			r.Header.Add("Authorization", v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("headers %v: status %d, want %d", tt.headers, w.Code, tt.want)
		}
	}
	if reached != 1 {
		t.Errorf("handler reached %d times, want 1 (only the valid request)", reached)
	}
}

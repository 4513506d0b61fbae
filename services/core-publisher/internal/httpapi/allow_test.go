package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/distcache/distcache/libs/svcconfig/apitoken"
	"github.com/distcache/distcache/services/core-publisher/internal/backload"
	"github.com/distcache/distcache/services/core-publisher/internal/pubmetrics"
)

// TestWrongMethodAllow: every path of the core-publisher answers a wrong method 405 with an
// Allow header naming the methods it takes (net/http's ServeMux writes it from the method
// patterns; GET patterns take HEAD too). Under /v1/ that holds for an authenticated caller (the
// token check comes first: 401 otherwise).
func TestWrongMethodAllow(t *testing.T) {
	t.Parallel()
	bl := &fakeBackloads{states: map[string]backload.State{"users": {Model: "users", Status: backload.StatusDone}}}
	h := Handler(Deps{Tokens: apitoken.New([]string{token}), Relay: fakeRelay{}, Backloads: bl, DB: pinger{}, Broker: pinger{}, Gatherer: pubmetrics.New().Registry})
	for _, tt := range []struct{ method, path, allow string }{
		{"POST", "/healthz", "GET, HEAD"},
		{"DELETE", "/readyz", "GET, HEAD"},
		{"PUT", "/metrics", "GET, HEAD"},
		{"POST", "/v1/models", "GET, HEAD"},
		{"DELETE", "/v1/backload/users", "GET, HEAD, POST"},
		{"PUT", "/v1/backload/users", "GET, HEAD, POST"},
		{"PATCH", "/v1/backload/users", "GET, HEAD, POST"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tt.method, tt.path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", tt.method, tt.path, rec.Code, rec.Header().Get("Allow"), tt.allow)
		}
	}
}

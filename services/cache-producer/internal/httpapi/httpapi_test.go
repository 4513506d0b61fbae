package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "distcache_producer_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Inc()
	ready := true
	h := Handler(Config{
		Registry: reg,
		Checks: map[string]Check{
			"redis": func(context.Context) error {
				if !ready {
					return errors.New("connection refused")
				}
				return nil
			},
		},
		Status: func() any { return []string{"g1"} },
	})
	tests := []struct {
		name     string
		path     string
		notReady bool
		wantCode int
		wantBody string
	}{
		{"healthz", "/healthz", false, 200, "ok"},
		{"ready", "/readyz", false, 200, `"ready":true`},
		{"not ready", "/readyz", true, 503, "connection refused"},
		{"healthz while not ready", "/healthz", true, 200, "ok"},
		{"metrics", "/metrics", false, 200, "distcache_producer_test_total 1"},
		{"status", "/status", false, 200, `["g1"]`},
		{"unknown", "/nope", false, 404, ""},
	}
	for _, tt := range tests {
		ready = !tt.notReady
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
			t.Errorf("%s: GET %s = %d %q, want %d containing %q", tt.name, tt.path, rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
		}
	}
}

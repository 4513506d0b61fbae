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
	ready, temporalUp := true, true
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
		Optional: map[string]Check{
			"temporal": func(context.Context) error {
				if !temporalUp {
					return errors.New("temporal is unavailable")
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
		noTemp   bool
		wantCode int
		wantBody string
	}{
		{"healthz", "/healthz", false, false, 200, "ok"},
		{"ready", "/readyz", false, false, 200, `"ready":true,"status":"ok"`},
		{"not ready", "/readyz", true, false, 503, `"ready":false,"status":"not ready: redis"`},
		{"degraded without temporal", "/readyz", false, true, 200, `"ready":true,"status":"degraded: temporal"`},
		{"optional check listed", "/readyz", false, true, 200, `"name":"temporal","ok":false,"optional":true}`},
		{"not ready wins over degraded", "/readyz", true, true, 503, `"ready":false,"status":"not ready: redis"`},
		{"healthz while not ready", "/healthz", true, false, 200, "ok"},
		{"metrics", "/metrics", false, false, 200, "distcache_producer_test_total 1"},
		{"status", "/status", false, false, 200, `["g1"]`},
		{"unknown", "/nope", false, false, 404, ""},
	}
	for _, tt := range tests {
		ready, temporalUp = !tt.notReady, !tt.noTemp
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
			t.Errorf("%s: GET %s = %d %q, want %d containing %q", tt.name, tt.path, rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
		}
		if strings.Contains(rec.Body.String(), "refused") || strings.Contains(rec.Body.String(), "unavailable") {
			t.Errorf("%s: GET %s answers a check's error text: %s", tt.name, tt.path, rec.Body)
		}
	}
}

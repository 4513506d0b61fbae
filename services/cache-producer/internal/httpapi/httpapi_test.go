package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// TestReadyzWhenChecksHang: checks run at once, so /readyz answers within about one check
// timeout when several dependencies hang, including a check that ignores its context (counted as
// failed), and says which are down.
func TestReadyzWhenChecksHang(t *testing.T) {
	t.Parallel()
	const timeout = 400 * time.Millisecond
	stuck := make(chan struct{})
	defer close(stuck)
	h := Handler(Config{
		CheckTimeout: timeout,
		Checks: map[string]Check{
			"kafka":    func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			"redis":    func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			"registry": func(context.Context) error { <-stuck; return nil }, // ignores its context
			"fine":     func(context.Context) error { return nil },
		},
		Optional: map[string]Check{
			"temporal": func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
		},
	})
	start := time.Now()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	took := time.Since(start)
	// Run one after the other, the checks would take 4 × 400 ms; the margin is for a loaded machine.
	if limit := 2*timeout + 300*time.Millisecond; took > limit {
		t.Errorf("/readyz took %v with hanging checks, want within %v", took, limit)
	}
	want := `"status":"not ready: kafka, redis, registry","checks":[{"name":"fine","ok":true},{"name":"kafka","ok":false},` +
		`{"name":"redis","ok":false},{"name":"registry","ok":false},{"name":"temporal","ok":false,"optional":true}]`
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), want) {
		t.Errorf("/readyz = %d %s, want 503 containing %s", rec.Code, rec.Body, want)
	}
}

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestReportService: `status` shows a service's readiness as its /readyz says it (a 503's body
// included), and, from the cache-producer's /status, each generation it is rebuilding and why
// (data_loss: Redis lost its data), so make status shows a generation whose data is missing.
func TestReportService(t *testing.T) {
	t.Parallel()
	producer := http.NewServeMux()
	producer.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"ready":true,"status":"degraded: data_loss, rebuilds","checks":[]}`))
	})
	producer.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`[{"projection":"users_by_email","generation":3,"next_offset":1200,"lag":0},
			{"projection":"users_by_id","generation":2,"next_offset":40,
			 "rebuild":{"reason":"data_loss","detail":"data loss: …","since":"2026-01-02T03:04:05Z","replaced_offset":0,"end_offset":5000}}]`))
	})
	down := http.NewServeMux()
	down.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"ready":false,"status":"not ready: redis"}`))
	})
	ok := http.NewServeMux()
	ok.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"ok"}`)) })

	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		mux      *http.ServeMux
		health   string
		rebuilds []string
	}{
		{"rebuilding after a data loss", producer, "running, degraded: data_loss, rebuilds",
			[]string{"users_by_id/g2 rebuilding (data_loss): offset 40 of 5000, since "}},
		{"not ready", down, "running, not ready: redis", nil},
		{"ready, no /status", ok, "running, ready", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tc.mux)
			defer srv.Close()
			rep := reportService(ctx, strings.TrimPrefix(srv.URL, "http://"))
			if rep.health != tc.health || len(rep.rebuilds) != len(tc.rebuilds) {
				t.Fatalf("report = %+v, want health %q and %d rebuild lines", rep, tc.health, len(tc.rebuilds))
			}
			for i, want := range tc.rebuilds {
				if !strings.HasPrefix(rep.rebuilds[i], want) {
					t.Errorf("rebuild line %q, want it to start with %q", rep.rebuilds[i], want)
				}
			}
		})
	}
	if rep := reportService(ctx, "127.0.0.1:1"); !strings.HasPrefix(rep.health, "running, /readyz: no answer") {
		t.Errorf("a service that does not answer: %q", rep.health)
	}
}

package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusOK)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)

	tests := []struct {
		name          string
		args          []string
		wantErr       bool
		wantUnhealthy bool
	}{
		{name: "2xx is healthy", args: []string{srv.URL + "/ok"}},
		{name: "503 is unhealthy", args: []string{srv.URL + "/readyz"}, wantErr: true, wantUnhealthy: true},
		{name: "timeout", args: []string{"-timeout", "50ms", srv.URL + "/slow"}, wantErr: true},
		{name: "connection refused", args: []string{"http://127.0.0.1:1/healthz"}, wantErr: true},
		{name: "no URL", args: nil, wantErr: true},
		{name: "not a URL", args: []string{"127.0.0.1:58081"}, wantErr: true},
		{name: "bad timeout", args: []string{"-timeout", "0s", srv.URL + "/ok"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(context.Background(), tt.args, io.Discard)
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("run(%q) error = %v, want error: %v", tt.args, err, tt.wantErr)
			}
			if got := errors.Is(err, ErrUnhealthy); got != tt.wantUnhealthy {
				t.Errorf("run(%q) errors.Is(err, ErrUnhealthy) = %v, want %v (err %v)", tt.args, got, tt.wantUnhealthy, err)
			}
		})
	}
}

package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/services/core-publisher/internal/backload"
	"github.com/distcache/distcache/services/core-publisher/internal/pubmetrics"
	"github.com/distcache/distcache/services/core-publisher/internal/relay"
)

type fakeRelay struct{ st relay.Status }

func (f fakeRelay) Status() relay.Status { return f.st }

type pinger struct{ err error }

func (p pinger) Ping(context.Context) error { return p.err }

type fakeBackloads struct {
	startErr error
	started  []string
	states   map[string]backload.State
}

func (f *fakeBackloads) Models(context.Context) ([]backload.Model, error) {
	return []backload.Model{{Aggregate: "users", Table: "users", KeyColumn: "id"}}, nil
}

func (f *fakeBackloads) Start(_ context.Context, m string) error {
	if f.startErr != nil {
		return f.startErr
	}
	f.started = append(f.started, m)
	return nil
}

func (f *fakeBackloads) State(_ context.Context, m string) (backload.State, bool, error) {
	st, ok := f.states[m]
	return st, ok, nil
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tests := []struct {
		name     string
		st       relay.Status
		db, kafk error
		wantCode int
		wantRole string
	}{
		{"active", relay.Status{Active: true, LastOK: now}, nil, nil, 200, "active"},
		{"healthy standby", relay.Status{LastOK: now}, nil, nil, 200, "standby"},
		{"relay error", relay.Status{LastOK: now, Err: errors.New("connect: refused")}, nil, nil, 503, "standby"},
		{"never talked to the database", relay.Status{}, nil, nil, 503, "standby"},
		{"stale", relay.Status{Active: true, LastOK: now.Add(-time.Hour)}, nil, nil, 503, "active"},
		{"database down", relay.Status{Active: true, LastOK: now}, errors.New("down"), nil, 503, "active"},
		{"broker down", relay.Status{Active: true, LastOK: now}, nil, errors.New("down"), 503, "active"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Handler(Deps{Relay: fakeRelay{tt.st}, Backloads: &fakeBackloads{}, DB: pinger{tt.db}, Broker: pinger{tt.kafk}, Gatherer: pubmetrics.New().Registry})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			var body struct{ Role string }
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != tt.wantCode || body.Role != tt.wantRole {
				t.Errorf("got %d role %q (%s), want %d role %q", rec.Code, body.Role, rec.Body, tt.wantCode, tt.wantRole)
			}
		})
	}
}

func TestBackloadAPI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		method   string
		path     string
		startErr error
		wantCode int
		wantBody string
	}{
		{"start", "POST", "/v1/backload/users", nil, http.StatusAccepted, `"status":"started"`},
		{"unknown", "POST", "/v1/backload/nope", fmt.Errorf("%w: nope", backload.ErrUnknownModel), http.StatusNotFound, "unknown model"},
		{"running", "POST", "/v1/backload/users", fmt.Errorf("%w: users", backload.ErrRunning), http.StatusConflict, "already running"},
		{"failure", "POST", "/v1/backload/users", errors.New("db gone"), http.StatusInternalServerError, "db gone"},
		{"state", "GET", "/v1/backload/users", nil, http.StatusOK, `"status":"done"`},
		{"no state", "GET", "/v1/backload/orgs", nil, http.StatusNotFound, "never backloaded"},
		{"models", "GET", "/v1/models", nil, http.StatusOK, `"key_column":"id"`},
		{"wrong method", "DELETE", "/v1/backload/users", nil, http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bl := &fakeBackloads{startErr: tt.startErr, states: map[string]backload.State{"users": {Model: "users", Status: backload.StatusDone}}}
			h := Handler(Deps{Relay: fakeRelay{}, Backloads: bl, DB: pinger{}, Broker: pinger{}, Gatherer: pubmetrics.New().Registry})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("got %d %s, want %d containing %q", rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

// TestReadyzHeldModels: a model held back does not make the publisher
// unready, and /readyz names it with the reason.
func TestReadyzHeldModels(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := relay.Status{Active: true, LastOK: time.Now(), Held: []relay.HeldModel{
		{Aggregate: "orders", Reason: "topic distcache.orders refused: the broker refused to create it", Since: since},
	}}
	h := Handler(Deps{Relay: fakeRelay{st}, Backloads: &fakeBackloads{}, DB: pinger{}, Broker: pinger{}, Gatherer: pubmetrics.New().Registry})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	var body struct {
		Status     string
		HeldModels []relay.HeldModel `json:"held_models"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %s: %v", rec.Body, err)
	}
	if rec.Code != http.StatusOK || body.Status != "ready" {
		t.Errorf("got %d status %q, want 200 ready", rec.Code, body.Status)
	}
	if len(body.HeldModels) != 1 || body.HeldModels[0] != st.Held[0] {
		t.Errorf("held_models: got %+v, want %+v", body.HeldModels, st.Held)
	}

	h = Handler(Deps{Relay: fakeRelay{relay.Status{Active: true, LastOK: time.Now()}}, Backloads: &fakeBackloads{}, DB: pinger{}, Broker: pinger{}, Gatherer: pubmetrics.New().Registry})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if !strings.Contains(rec.Body.String(), `"held_models":[]`) {
		t.Errorf("no held model: got %s, want an empty held_models list", rec.Body)
	}
}

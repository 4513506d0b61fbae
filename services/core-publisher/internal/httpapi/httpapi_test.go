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

	"github.com/distcache/distcache/libs/svcconfig/apitoken"
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

const token = "publisher-token-0123456789"

// TestReadyz: /readyz answers "ok" or "not ready: <components>" and never the components'
// error texts (secret-looking strings below).
func TestReadyz(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tests := []struct {
		name       string
		st         relay.Status
		db, kafk   error
		wantCode   int
		wantRole   string
		wantStatus string
	}{
		{"active", relay.Status{Active: true, LastOK: now}, nil, nil, 200, "active", "ok"},
		{"healthy standby", relay.Status{LastOK: now}, nil, nil, 200, "standby", "ok"},
		{"relay error", relay.Status{LastOK: now, Err: errors.New("connect 10.0.0.7:5432: refused")}, nil, nil, 503, "standby", "not ready: relay"},
		{"never talked to the database", relay.Status{}, nil, nil, 503, "standby", "not ready: relay"},
		{"stale", relay.Status{Active: true, LastOK: now.Add(-time.Hour)}, nil, nil, 503, "active", "not ready: relay"},
		{"database down", relay.Status{Active: true, LastOK: now}, errors.New("password authentication failed for user core_admin"), nil, 503, "active", "not ready: database"},
		{"broker down", relay.Status{Active: true, LastOK: now}, nil, errors.New("dial kafka-0.internal:9092"), 503, "active", "not ready: broker"},
		{"both down", relay.Status{Active: true, LastOK: now}, errors.New("down"), errors.New("down"), 503, "active", "not ready: database, broker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Handler(Deps{Relay: fakeRelay{tt.st}, Backloads: &fakeBackloads{}, DB: pinger{tt.db}, Broker: pinger{tt.kafk}, Gatherer: pubmetrics.New().Registry})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			var body struct{ Role, Status string }
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != tt.wantCode || body.Role != tt.wantRole || body.Status != tt.wantStatus {
				t.Errorf("got %d role %q status %q (%s), want %d role %q status %q", rec.Code, body.Role, body.Status, rec.Body, tt.wantCode, tt.wantRole, tt.wantStatus)
			}
			for _, leak := range []string{"10.0.0.7", "core_admin", "kafka-0", "refused", "down\""} {
				if strings.Contains(rec.Body.String(), leak) {
					t.Errorf("body %s holds error text %q", rec.Body, leak)
				}
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
		{"failure", "POST", "/v1/backload/users", errors.New("db gone"), http.StatusInternalServerError, `"error":"internal error"`},
		{"invalid name", "POST", "/v1/backload/..%2Fetc", nil, http.StatusBadRequest, "invalid model name"},
		{"invalid name state", "GET", "/v1/backload/a%00b", nil, http.StatusBadRequest, "invalid model name"},
		{"state", "GET", "/v1/backload/users", nil, http.StatusOK, `"status":"done"`},
		{"no state", "GET", "/v1/backload/orgs", nil, http.StatusNotFound, "never backloaded"},
		{"models", "GET", "/v1/models", nil, http.StatusOK, `"key_column":"id"`},
		{"wrong method", "DELETE", "/v1/backload/users", nil, http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bl := &fakeBackloads{startErr: tt.startErr, states: map[string]backload.State{"users": {Model: "users", Status: backload.StatusDone}}}
			h := Handler(Deps{Tokens: apitoken.New([]string{token}), Relay: fakeRelay{}, Backloads: bl, DB: pinger{}, Broker: pinger{}, Gatherer: pubmetrics.New().Registry})
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tt.method, tt.path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("got %d %s, want %d containing %q", rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
			if strings.Contains(rec.Body.String(), "db gone") {
				t.Errorf("body %s holds the internal error", rec.Body)
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
	if rec.Code != http.StatusOK || body.Status != "ok" {
		t.Errorf("got %d status %q, want 200 ok", rec.Code, body.Status)
	}
	if len(body.HeldModels) != 1 || body.HeldModels[0].Aggregate != "orders" || !body.HeldModels[0].Since.Equal(since) {
		t.Errorf("held_models: got %+v, want orders since %v", body.HeldModels, since)
	}
	if strings.Contains(rec.Body.String(), "refused") {
		t.Errorf("body %s holds the reason (error text): it belongs in the log", rec.Body)
	}

	h = Handler(Deps{Relay: fakeRelay{relay.Status{Active: true, LastOK: time.Now()}}, Backloads: &fakeBackloads{}, DB: pinger{}, Broker: pinger{}, Gatherer: pubmetrics.New().Registry})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if !strings.Contains(rec.Body.String(), `"held_models":[]`) {
		t.Errorf("no held model: got %s, want an empty held_models list", rec.Body)
	}
}

// TestAPINeedsToken: every /v1/ endpoint refuses a request without a valid token with 401 and a
// Bearer challenge, and never starts a backload then; health, readiness and metrics stay open.
// A handler built without Tokens refuses every /v1/ request; apitoken.New(nil) opens them.
func TestAPINeedsToken(t *testing.T) {
	t.Parallel()
	bl := &fakeBackloads{}
	h := Handler(Deps{Tokens: apitoken.New([]string{token}), Relay: fakeRelay{relay.Status{Active: true, LastOK: time.Now()}},
		Backloads: bl, DB: pinger{}, Broker: pinger{}, Gatherer: pubmetrics.New().Registry})
	for _, ep := range []struct{ method, path string }{{"GET", "/v1/models"}, {"POST", "/v1/backload/users"}, {"GET", "/v1/backload/users"}} {
		for _, authz := range []string{"", "Bearer wrong-token-0123456789", "Basic " + token, "Bearer " + token[:10]} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(ep.method, ep.path, nil)
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("%s %s with %q: %d (challenge %q), want 401 with a Bearer challenge", ep.method, ep.path, authz, rec.Code, rec.Header().Get("WWW-Authenticate"))
			}
		}
	}
	if len(bl.started) != 0 {
		t.Errorf("backloads started without a valid token: %v", bl.started)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want 200", path, rec.Code)
		}
	}

	for _, tc := range []struct {
		name   string
		tokens *apitoken.Tokens
		want   int
	}{{"no Tokens: closed", nil, http.StatusUnauthorized}, {"apitoken.New(nil): open", apitoken.New(nil), http.StatusOK}} {
		h := Handler(Deps{Tokens: tc.tokens, Relay: fakeRelay{}, Backloads: &fakeBackloads{}, DB: pinger{}, Broker: pinger{}, Gatherer: pubmetrics.New().Registry})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/models", nil))
		if rec.Code != tc.want {
			t.Errorf("%s: GET /v1/models without a token: %d, want %d", tc.name, rec.Code, tc.want)
		}
	}
}

// Package httpapi serves the core-publisher's HTTP endpoints: health,
// readiness, Prometheus metrics and the backload API the control-plane calls.
//
//	GET  /healthz                the process is up
//	GET  /readyz                 active (holding the lease) or a healthy standby, and DB and broker reachable;
//	                             the body lists the models held back ("held_models": model, reason, since)
//	GET  /metrics                Prometheus
//	GET  /v1/models              backloadable models
//	POST /v1/backload/{model}    start a fresh backload: 202, 404 unknown model, 409 already running
//	GET  /v1/backload/{model}    the model's backload checkpoint: 200, 404 never backloaded
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/distcache/distcache/services/core-publisher/internal/backload"
	"github.com/distcache/distcache/services/core-publisher/internal/relay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Relay reports the relay's state.
type Relay interface {
	Status() relay.Status
}

// Backloads is the backload API.
type Backloads interface {
	Models(ctx context.Context) ([]backload.Model, error)
	Start(ctx context.Context, aggregate string) error
	State(ctx context.Context, aggregate string) (backload.State, bool, error)
}

// Pinger checks that a dependency answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

var (
	_ Relay     = (*relay.Relay)(nil)
	_ Backloads = (*backload.Backloader)(nil)
)

// Deps are what the handler needs.
type Deps struct {
	Relay     Relay
	Backloads Backloads
	DB        Pinger
	Broker    Pinger
	Gatherer  prometheus.Gatherer
	Log       *slog.Logger
	// Background bounds backloads started through the API (the service's
	// lifetime, not the request's).
	Background context.Context
	// StaleAfter: a relay that has not talked to PostgreSQL for this long is
	// not ready. Default 30s.
	StaleAfter time.Duration
}

// Handler returns the HTTP handler.
func Handler(d Deps) http.Handler {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Background == nil {
		d.Background = context.Background()
	}
	if d.StaleAfter <= 0 {
		d.StaleAfter = 30 * time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", d.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/models", d.models)
	mux.HandleFunc("POST /v1/backload/{model}", d.startBackload)
	mux.HandleFunc("GET /v1/backload/{model}", d.backloadState)
	return mux
}

func (d Deps) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	st := d.Relay.Status()
	role := "standby"
	if st.Active {
		role = "active"
	}
	// Held models do not make the publisher unready (the others flow), but
	// they are listed so an operator sees which model waits and why.
	held := st.Held
	if held == nil {
		held = []relay.HeldModel{}
	}
	body := map[string]any{"role": role, "held_models": held}
	var problems []string
	if st.Err != nil {
		problems = append(problems, "relay: "+st.Err.Error())
	}
	if st.LastOK.IsZero() || time.Since(st.LastOK) > d.StaleAfter {
		problems = append(problems, "relay: no successful database round trip recently")
	}
	if err := d.DB.Ping(ctx); err != nil {
		problems = append(problems, "database: "+err.Error())
	}
	if err := d.Broker.Ping(ctx); err != nil {
		problems = append(problems, "broker: "+err.Error())
	}
	if len(problems) > 0 {
		body["status"] = "not ready"
		body["problems"] = problems
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body["status"] = "ready"
	writeJSON(w, http.StatusOK, body)
}

func (d Deps) models(w http.ResponseWriter, r *http.Request) {
	ms, err := d.Backloads.Models(r.Context())
	if err != nil {
		d.fail(w, http.StatusInternalServerError, err)
		return
	}
	type model struct {
		Model     string `json:"model"`
		Table     string `json:"table"`
		KeyColumn string `json:"key_column"`
	}
	out := make([]model, len(ms))
	for i, m := range ms {
		out[i] = model{m.Aggregate, m.Table, m.KeyColumn}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

func (d Deps) startBackload(w http.ResponseWriter, r *http.Request) {
	model := r.PathValue("model")
	err := d.Backloads.Start(d.Background, model)
	switch {
	case errors.Is(err, backload.ErrUnknownModel):
		d.fail(w, http.StatusNotFound, err)
	case errors.Is(err, backload.ErrRunning):
		d.fail(w, http.StatusConflict, err)
	case err != nil:
		d.fail(w, http.StatusInternalServerError, err)
	default:
		d.Log.Info("backload started through the API", "model", model)
		writeJSON(w, http.StatusAccepted, map[string]string{"model": model, "status": "started"})
	}
}

func (d Deps) backloadState(w http.ResponseWriter, r *http.Request) {
	model := r.PathValue("model")
	st, ok, err := d.Backloads.State(r.Context(), model)
	switch {
	case err != nil:
		d.fail(w, http.StatusInternalServerError, err)
	case !ok:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "model " + model + " was never backloaded"})
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

func (d Deps) fail(w http.ResponseWriter, code int, err error) {
	if code >= 500 {
		d.Log.Error("http request failed", "err", err)
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

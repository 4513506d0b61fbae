// Package httpapi serves the core-publisher's HTTP endpoints: health,
// readiness, Prometheus metrics and the backload API.
//
//	GET  /healthz                the process is up
//	GET  /readyz                 active (holding the lease) or a healthy standby, and DB and broker reachable:
//	                             200 "status": "ok", or 503 "not ready: <component>, ..." (relay, database,
//	                             broker); the body gives the role and lists the models held back
//	                             ("held_models": model, since); error texts go to the log only
//	GET  /metrics                Prometheus
//	GET  /v1/models              backloadable models
//	POST /v1/backload/{model}    start a fresh backload: 202, 400 invalid name, 404 unknown model, 409 already running
//	GET  /v1/backload/{model}    the model's backload checkpoint: 200, 400 invalid name, 404 never backloaded
//
// Everything under /v1/ needs a bearer token (Deps.Tokens): it reveals table and key-column
// names and starts full re-reads of core tables. A 5xx answer names no internal detail: it says
// "internal error" with a request id, and the log line with that id holds the error.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/svcconfig/apitoken"
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

// MaxBodyBytes bounds a request body under /v1/ (none of its endpoints reads one).
const MaxBodyBytes = 1 << 20

// Deps are what the handler needs.
type Deps struct {
	// Tokens guard /v1/. apitoken.New(nil) opens the API (PUBLISHER_INSECURE_NO_AUTH); nil
	// closes it: every /v1/ request is refused.
	Tokens    *apitoken.Tokens
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
	api := http.NewServeMux()
	api.HandleFunc("GET /v1/models", d.models)
	api.HandleFunc("POST /v1/backload/{model}", d.startBackload)
	api.HandleFunc("GET /v1/backload/{model}", d.backloadState)
	tokens := d.Tokens
	if tokens == nil {
		tokens = closed()
	}
	mux.Handle("/v1/", http.MaxBytesHandler(tokens.Middleware("distcache-core-publisher", refuse, api), MaxBodyBytes))
	return mux
}

// closed is a token set nobody holds: a random token, never shown.
func closed() *apitoken.Tokens {
	return apitoken.New([]string{rand.Text() + rand.Text()})
}

func refuse(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
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
	// they are listed so an operator sees which model waits; why is in the log.
	type held struct {
		Model string    `json:"model"`
		Since time.Time `json:"since"`
	}
	heldModels := make([]held, len(st.Held))
	for i, h := range st.Held {
		heldModels[i] = held{Model: h.Aggregate, Since: h.Since}
	}
	body := map[string]any{"role": role, "held_models": heldModels}
	// The answer names the component at fault, never its error: /readyz is open to anyone who
	// reaches the port.
	var down []string
	fault := func(component string, err error) {
		down = append(down, component)
		d.Log.Warn("not ready", "component", component, "err", err)
	}
	switch {
	case st.Err != nil:
		fault("relay", st.Err)
	case st.LastOK.IsZero() || time.Since(st.LastOK) > d.StaleAfter:
		fault("relay", errors.New("no successful database round trip recently"))
	}
	if err := d.DB.Ping(ctx); err != nil {
		fault("database", err)
	}
	if err := d.Broker.Ping(ctx); err != nil {
		fault("broker", err)
	}
	if len(down) > 0 {
		body["status"] = "not ready: " + strings.Join(down, ", ")
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body["status"] = "ok"
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
		// Columns is the published-columns spec (only:a|b or except:a|b); empty: every column.
		Columns string `json:"columns,omitempty"`
	}
	out := make([]model, len(ms))
	for i, m := range ms {
		out[i] = model{m.Aggregate, m.Table, m.KeyColumn, m.Columns}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

// modelOf returns the request's model name, or answers 400 and returns false when it is not
// a valid model name (events.ValidateAggregateName); the name is not echoed.
func modelOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	model := r.PathValue("model")
	if events.ValidateAggregateName(model) != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid model name: 1 to 200 of A-Z a-z 0-9 _ -"})
		return "", false
	}
	return model, true
}

func (d Deps) startBackload(w http.ResponseWriter, r *http.Request) {
	model, ok := modelOf(w, r)
	if !ok {
		return
	}
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
	model, ok := modelOf(w, r)
	if !ok {
		return
	}
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

// fail answers an error. A 4xx carries the error's text (this package's sentinels: the caller's
// mistake); a 5xx carries only "internal error" and a request id, and the error is logged with
// that id.
func (d Deps) fail(w http.ResponseWriter, code int, err error) {
	if code < 500 {
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	id := requestID()
	d.Log.Error("http request failed", "request_id", id, "err", err)
	writeJSON(w, code, map[string]string{"error": "internal error", "request_id": id})
}

func requestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

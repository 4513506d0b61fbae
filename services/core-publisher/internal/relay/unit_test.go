package relay

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func TestFinalPrefix(t *testing.T) {
	t.Parallel()
	mk := func(finals ...bool) []row {
		rs := make([]row, len(finals))
		for i, f := range finals {
			rs[i] = row{id: int64(i + 1), final: f}
		}
		return rs
	}
	tests := []struct {
		name     string
		rows     []row
		wantN    int
		wantHeld bool
	}{
		{"empty", nil, 0, false},
		{"all final", mk(true, true, true), 3, false},
		{"first not final", mk(false, true), 0, true},
		{"cut in the middle", mk(true, true, false, true), 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, held := finalPrefix(tt.rows)
			if len(got) != tt.wantN || held != tt.wantHeld {
				t.Errorf("got %d rows held=%v, want %d held=%v", len(got), held, tt.wantN, tt.wantHeld)
			}
		})
	}
}

func TestEnvelope(t *testing.T) {
	t.Parallel()
	base := func() row {
		return row{id: 1, final: true, aggregate: "users", key: "7", version: 3, op: "upsert",
			payload: []byte(`{"id":7}`), headers: []byte(`{"traceparent":"00-x"}`),
			eventID: "6f1c54d4-5a4e-4a4b-9a57-8f2f1f7f2a11", createdAt: time.Unix(1700000000, 0)}
	}
	tests := []struct {
		name    string
		mod     func(*row)
		wantErr string // "" for valid
	}{
		{"valid upsert", func(*row) {}, ""},
		{"valid delete", func(r *row) { r.op, r.payload = "delete", nil }, ""},
		{"delete with JSON null", func(r *row) { r.op, r.payload = "delete", []byte("null") }, ""},
		{"array payload", func(r *row) { r.payload = []byte(`[1]`) }, "not a JSON object"},
		{"missing payload", func(r *row) { r.payload = nil }, "missing"},
		{"empty key", func(r *row) { r.key = "" }, "key"},
		{"bad op", func(r *row) { r.op = "merge" }, "unknown op"},
		{"bad aggregate", func(r *row) { r.aggregate = "a.b" }, "aggregate"},
		{"numeric header", func(r *row) { r.headers = []byte(`{"a":1}`) }, "headers"},
		{"reserved header", func(r *row) { r.headers = []byte(`{"dc-op":"x"}`) }, "reserved"},
		{"too large", func(r *row) { r.payload = []byte(`{"x":"` + strings.Repeat("a", 100) + `"}`) }, "size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			tt.mod(&r)
			e, err := envelope(&r, 64)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				if e.Key != r.key || e.Version != r.version || e.Headers["traceparent"] != "00-x" {
					t.Errorf("got %+v, want the row's fields", e)
				}
				if e.Op == "delete" && e.Payload != nil {
					t.Errorf("delete payload: got %q, want nil", e.Payload)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestNewDisablesSeqScans: the relay's own session plans outbox reads and
// deletes by primary key even when (auto)vacuum has recorded the drained
// outbox as empty; New leaves the caller's config alone, and an explicit
// setting wins.
func TestNewDisablesSeqScans(t *testing.T) {
	t.Parallel()
	newProducer := func(string) (Producer, error) { return nil, errors.New("unused") }
	cfg, err := pgx.ParseConfig("postgres://u@127.0.0.1:1/db")
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(cfg, newProducer)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.connCfg.RuntimeParams["enable_seqscan"]; got != "off" {
		t.Errorf("relay session enable_seqscan = %q, want off", got)
	}
	if _, set := cfg.RuntimeParams["enable_seqscan"]; set {
		t.Error("New changed the caller's config")
	}
	cfg.RuntimeParams["enable_seqscan"] = "on"
	if r, _ = New(cfg, newProducer); r.connCfg.RuntimeParams["enable_seqscan"] != "on" {
		t.Error("an explicit enable_seqscan was overridden")
	}
}

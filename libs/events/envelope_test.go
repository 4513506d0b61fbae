package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// validEnvelope returns an upsert that passes Validate.
func validEnvelope() Envelope {
	return Envelope{
		Aggregate:  "users",
		Key:        "42",
		Version:    7,
		Op:         OpUpsert,
		Payload:    json.RawMessage(`{"id":42,"email":"a@example.com"}`),
		Headers:    map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		EventID:    "7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90",
		SourceTime: time.Date(2026, 11, 27, 19, 0, 0, 123456789, time.UTC),
	}
}

func validDelete() Envelope {
	e := validEnvelope()
	e.Op = OpDelete
	e.Payload = nil
	return e
}

func TestValidateAcceptsValidEnvelopes(t *testing.T) {
	t.Parallel()
	for name, e := range map[string]Envelope{
		"upsert":            validEnvelope(),
		"delete":            validDelete(),
		"no headers":        func() Envelope { e := validEnvelope(); e.Headers = nil; return e }(),
		"payload with ws":   func() Envelope { e := validEnvelope(); e.Payload = json.RawMessage(" \n{}\t"); return e }(),
		"dashed aggregate":  func() Envelope { e := validEnvelope(); e.Aggregate = "org-members_v2"; return e }(),
		"max int64 version": func() Envelope { e := validEnvelope(); e.Version = 1<<63 - 1; return e }(),
	} {
		t.Run(name, func(t *testing.T) {
			if err := e.Validate(); err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestValidateRejectsNamingTheField(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", DefaultMaxEventBytes)
	tests := []struct {
		name      string
		mutate    func(*Envelope)
		limit     int // 0: Validate()
		wantField string
		wantIn    string // substring of the message
	}{
		{"empty aggregate", func(e *Envelope) { e.Aggregate = "" }, 0, FieldAggregate, "empty"},
		{"aggregate with dot", func(e *Envelope) { e.Aggregate = "users.v2" }, 0, FieldAggregate, "'.'"},
		{"aggregate with space", func(e *Envelope) { e.Aggregate = "my users" }, 0, FieldAggregate, "' '"},
		{"aggregate too long", func(e *Envelope) { e.Aggregate = strings.Repeat("a", MaxAggregateNameLen+1) }, 0, FieldAggregate, "limit"},
		{"no key", func(e *Envelope) { e.Key = "" }, 0, FieldKey, "empty"},
		{"key with NUL", func(e *Envelope) { e.Key = "a\x00b" }, 0, FieldKey, "NUL"},
		{"key invalid utf8", func(e *Envelope) { e.Key = "\xff" }, 0, FieldKey, "UTF-8"},
		{"version zero", func(e *Envelope) { e.Version = 0 }, 0, FieldVersion, ">= 1"},
		{"version negative", func(e *Envelope) { e.Version = -3 }, 0, FieldVersion, "-3"},
		{"empty op", func(e *Envelope) { e.Op = "" }, 0, FieldOp, "empty"},
		{"unknown op", func(e *Envelope) { e.Op = "insert" }, 0, FieldOp, `unknown op "insert"`},
		{"upsert without payload", func(e *Envelope) { e.Payload = nil }, 0, FieldPayload, "missing"},
		{"upsert empty payload", func(e *Envelope) { e.Payload = json.RawMessage{} }, 0, FieldPayload, "not a JSON object"},
		{"payload array", func(e *Envelope) { e.Payload = json.RawMessage(`[1,2]`) }, 0, FieldPayload, "not a JSON object"},
		{"payload string", func(e *Envelope) { e.Payload = json.RawMessage(`"x"`) }, 0, FieldPayload, "not a JSON object"},
		{"payload null", func(e *Envelope) { e.Payload = json.RawMessage(`null`) }, 0, FieldPayload, "not a JSON object"},
		{"payload broken json", func(e *Envelope) { e.Payload = json.RawMessage(`{"a":`) }, 0, FieldPayload, "not a JSON object"},
		{"payload two values", func(e *Envelope) { e.Payload = json.RawMessage(`{}{}`) }, 0, FieldPayload, "not a JSON object"},
		{"payload on delete", func(e *Envelope) { e.Op = OpDelete }, 0, FieldPayload, "empty for op delete"},
		{"empty payload on delete", func(e *Envelope) { e.Op = OpDelete; e.Payload = json.RawMessage{} }, 0, FieldPayload, "empty for op delete"},
		{"reserved header", func(e *Envelope) { e.Headers = map[string]string{"dc-version": "9"} }, 0, FieldHeaders, "reserved"},
		{"empty header name", func(e *Envelope) { e.Headers = map[string]string{"": "x"} }, 0, FieldHeaders, "empty header name"},
		{"header value NUL", func(e *Envelope) { e.Headers = map[string]string{"a": "\x00"} }, 0, FieldHeaders, "NUL"},
		{"no event id", func(e *Envelope) { e.EventID = "" }, 0, FieldEventID, "empty"},
		{"bad event id", func(e *Envelope) { e.EventID = "not-a-uuid" }, 0, FieldEventID, "not a canonical UUID"},
		{"braced event id", func(e *Envelope) { e.EventID = "{7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90}" }, 0, FieldEventID, "not a canonical UUID"},
		{"zero source time", func(e *Envelope) { e.SourceTime = time.Time{} }, 0, FieldSourceTime, "zero"},
		{"oversized default limit", func(e *Envelope) { e.Payload = json.RawMessage(`{"a":"` + big + `"}`) }, 0, FieldSize, "limit 1048576"},
		{"oversized custom limit", func(e *Envelope) {}, 64, FieldSize, "limit 64"},
		{"oversized by headers", func(e *Envelope) { e.Headers = map[string]string{"h": strings.Repeat("y", 100)} }, 120, FieldSize, "limit 120"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := validEnvelope()
			tt.mutate(&e)
			var err error
			if tt.limit == 0 {
				err = e.Validate()
			} else {
				err = e.ValidateWithLimit(tt.limit)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v, want *ValidationError", err)
			}
			if ve.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (err %v)", ve.Field, tt.wantField, err)
			}
			if !strings.Contains(err.Error(), tt.wantField) || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q, want it to name %q and contain %q", err, tt.wantField, tt.wantIn)
			}
			if !errors.Is(err, ErrInvalidEnvelope) {
				t.Errorf("errors.Is(err, ErrInvalidEnvelope) = false for %v", err)
			}
			if got, want := errors.Is(err, ErrTooLarge), tt.wantField == FieldSize; got != want {
				t.Errorf("errors.Is(err, ErrTooLarge) = %v, want %v", got, want)
			}
		})
	}
}

func TestValidateWithLimitZeroDisablesSizeCheck(t *testing.T) {
	t.Parallel()
	e := validEnvelope()
	e.Payload = json.RawMessage(`{"a":"` + strings.Repeat("x", 2*DefaultMaxEventBytes) + `"}`)
	if err := e.ValidateWithLimit(0); err != nil {
		t.Fatalf("ValidateWithLimit(0) = %v, want nil", err)
	}
	if err := e.Validate(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Validate() = %v, want ErrTooLarge", err)
	}
}

func TestSize(t *testing.T) {
	t.Parallel()
	e := Envelope{Aggregate: "ab", Key: "cde", Payload: json.RawMessage(`{}`), Headers: map[string]string{"k": "vv"}}
	if got, want := e.Size(), 2+3+2+1+2; got != want {
		t.Fatalf("Size() = %d, want %d", got, want)
	}
}

func TestNewEventIDIsValid(t *testing.T) {
	t.Parallel()
	a, b := NewEventID(), NewEventID()
	if a == b {
		t.Fatalf("NewEventID returned %q twice", a)
	}
	if err := validateEventID(a); err != nil {
		t.Fatalf("NewEventID() = %q: %v", a, err)
	}
}

func TestOpValid(t *testing.T) {
	t.Parallel()
	for op, want := range map[Op]bool{OpUpsert: true, OpDelete: true, "": false, "UPSERT": false, "update": false} {
		if got := op.Valid(); got != want {
			t.Errorf("Op(%q).Valid() = %v, want %v", op, got, want)
		}
	}
}

package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Op is the kind of change an Envelope carries.
type Op string

// The two operations of the contract: an upsert carries the full after-image
// of the record, a delete carries no payload (a tombstone in Kafka).
const (
	OpUpsert Op = "upsert"
	OpDelete Op = "delete"
)

// Valid reports whether op is one of the known operations.
func (op Op) Valid() bool { return op == OpUpsert || op == OpDelete }

// DefaultMaxEventBytes is the size limit Validate applies: 1 MiB, Kafka's
// default maximum message size. See Envelope.Size for what counts.
const DefaultMaxEventBytes = 1 << 20

// ReservedHeaderPrefix starts every header this package writes itself;
// envelope headers must not use it.
const ReservedHeaderPrefix = "dc-"

// Envelope is one change of one record of an aggregate (a model such as
// "users"): the unit written to the outbox, carried by one Kafka record and
// applied by cache-producers.
type Envelope struct {
	// Aggregate is the model name; it names the topic (see Topic) and must
	// pass ValidateAggregateName.
	Aggregate string
	// Key is the aggregate key (the source row's primary key as text). It is
	// the Kafka record key, so compaction keeps the latest change per key.
	Key string
	// Version is monotonic per (Aggregate, Key), starting at 1. A change with
	// an older version than one already applied never wins. The outbox writer
	// allocates it when left 0.
	Version int64
	// Op is OpUpsert or OpDelete.
	Op Op
	// Payload is the full after-image as a JSON object for OpUpsert and nil
	// for OpDelete. FromRecord returns it aliasing the record's value.
	Payload json.RawMessage
	// Headers are free-form string headers (trace context such as
	// "traceparent", ...) carried verbatim. Names must be non-empty and must
	// not start with ReservedHeaderPrefix.
	Headers map[string]string
	// EventID is the unique id of this event, a UUID in canonical text form.
	// The outbox writer generates it when empty.
	EventID string
	// SourceTime is when the change happened at the source (the outbox row's
	// created_at, which keeps microseconds). The outbox writer uses the
	// transaction's start time when zero.
	SourceTime time.Time
}

// NewEventID returns a fresh random (version 4) UUID for Envelope.EventID.
func NewEventID() string { return uuid.NewString() }

// Size is the number of bytes the envelope accounts for against a size
// limit: aggregate, key, payload and every header name and value.
func (e Envelope) Size() int { return e.size() }

func (e *Envelope) size() int {
	n := len(e.Aggregate) + len(e.Key) + len(e.Payload)
	for k, v := range e.Headers {
		n += len(k) + len(v)
	}
	return n
}

// ErrInvalidEnvelope is matched (errors.Is) by every *ValidationError.
var ErrInvalidEnvelope = errors.New("invalid event envelope")

// ErrTooLarge is matched (errors.Is) by the *ValidationError for an envelope
// larger than the limit, in addition to ErrInvalidEnvelope.
var ErrTooLarge = errors.New("event too large")

// Field names used in ValidationError.Field.
const (
	FieldAggregate  = "aggregate"
	FieldKey        = "key"
	FieldVersion    = "version"
	FieldOp         = "op"
	FieldPayload    = "payload"
	FieldHeaders    = "headers"
	FieldEventID    = "event_id"
	FieldSourceTime = "source_time"
	FieldSize       = "size"
)

// ValidationError says which field of an event is invalid and why. It matches
// ErrInvalidEnvelope with errors.Is (and ErrTooLarge for FieldSize).
type ValidationError struct {
	Field  string // one of the Field* constants
	Reason string
}

func (e *ValidationError) Error() string {
	return "invalid event: " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidEnvelope) (and ErrTooLarge for size
// errors) true.
func (e *ValidationError) Is(target error) bool {
	return target == ErrInvalidEnvelope || (target == ErrTooLarge && e.Field == FieldSize)
}

func invalid(field, reason string) *ValidationError {
	return &ValidationError{Field: field, Reason: reason}
}

// Validate checks the envelope against the contract with the default size
// limit (DefaultMaxEventBytes). The error is a *ValidationError naming the
// first invalid field.
func (e Envelope) Validate() error { return e.ValidateWithLimit(DefaultMaxEventBytes) }

// ValidateWithLimit is Validate with a size limit of maxBytes (see Size);
// maxBytes <= 0 disables the size check.
func (e Envelope) ValidateWithLimit(maxBytes int) error {
	return e.validate(maxBytes, false)
}

// validate checks every field. With forOutbox, Version 0 and an empty EventID
// and zero SourceTime are accepted: the outbox writer fills them in.
func (e *Envelope) validate(maxBytes int, forOutbox bool) error {
	return e.validateJSON(maxBytes, forOutbox, true)
}

// validateJSON is validate; checkJSON false checks only that an upsert's
// payload starts like a JSON object (FromRecordLazy).
func (e *Envelope) validateJSON(maxBytes int, forOutbox, checkJSON bool) error {
	if err := validateAggregate(e.Aggregate); err != nil {
		return err
	}
	if e.Key == "" {
		return invalid(FieldKey, "empty")
	}
	if !utf8.ValidString(e.Key) || strings.IndexByte(e.Key, 0) >= 0 {
		return invalid(FieldKey, "not valid UTF-8 text without NUL bytes")
	}
	switch {
	case e.Version < 0, e.Version == 0 && !forOutbox:
		return invalid(FieldVersion, fmt.Sprintf("%d, must be >= 1", e.Version))
	}
	switch e.Op {
	case OpUpsert:
		if e.Payload == nil {
			return invalid(FieldPayload, "missing for op upsert")
		}
		if !isJSONObject(e.Payload, checkJSON) {
			return invalid(FieldPayload, "not a JSON object")
		}
	case OpDelete:
		if e.Payload != nil {
			return invalid(FieldPayload, "must be empty for op delete")
		}
	case "":
		return invalid(FieldOp, "empty")
	default:
		return invalid(FieldOp, fmt.Sprintf("unknown op %q (want upsert or delete)", string(e.Op)))
	}
	// Of several bad headers the first by name is reported, so that one event (or record) is
	// always refused for the same reason whatever the map's order (FuzzRecordHeaders).
	var badHeader string
	var headerErr error
	for k, v := range e.Headers {
		if err := checkHeader(k, v); err != nil && (headerErr == nil || k < badHeader) {
			badHeader, headerErr = k, err
		}
	}
	if headerErr != nil {
		return headerErr
	}
	if e.EventID != "" || !forOutbox {
		if err := validateEventID(e.EventID); err != nil {
			return err
		}
	}
	if e.SourceTime.IsZero() && !forOutbox {
		return invalid(FieldSourceTime, "zero")
	}
	if maxBytes > 0 {
		if n := e.size(); n > maxBytes {
			return invalid(FieldSize, fmt.Sprintf("%d bytes, limit %d", n, maxBytes))
		}
	}
	return nil
}

// checkHeader checks one envelope header.
func checkHeader(k, v string) error {
	if k == "" {
		return invalid(FieldHeaders, "empty header name")
	}
	if strings.HasPrefix(k, ReservedHeaderPrefix) {
		return invalid(FieldHeaders, fmt.Sprintf("header %q uses the reserved prefix %q", k, ReservedHeaderPrefix))
	}
	if !utf8.ValidString(k) || !utf8.ValidString(v) || strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
		return invalid(FieldHeaders, fmt.Sprintf("header %q is not valid UTF-8 text without NUL bytes", k))
	}
	return nil
}

func validateEventID(id string) error {
	if id == "" {
		return invalid(FieldEventID, "empty")
	}
	if len(id) != 36 {
		return invalid(FieldEventID, fmt.Sprintf("%q is not a canonical UUID", id))
	}
	if _, err := uuid.Parse(id); err != nil {
		return invalid(FieldEventID, fmt.Sprintf("%q is not a canonical UUID", id))
	}
	return nil
}

// isJSONObject reports whether b is one valid JSON value that is an object
// (with full false: whether it starts like one).
func isJSONObject(b []byte, full bool) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return !full || json.Valid(b)
		}
		return false
	}
	return false
}

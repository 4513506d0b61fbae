package events

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Record header names (docs/architecture.md, "Kafka record").
const (
	HeaderVersion    = "dc-version"   // decimal version, >= 1
	HeaderOp         = "dc-op"        // "upsert" or "delete"
	HeaderEventID    = "dc-event-id"  // canonical UUID
	HeaderSourceTime = "dc-source-ts" // RFC 3339 with nanoseconds, UTC
	HeaderAggregate  = "dc-aggregate" // aggregate name
)

// ErrMalformedRecord is matched (errors.Is) by every error FromRecord returns.
var ErrMalformedRecord = errors.New("malformed event record")

// RecordError is FromRecord's error: which part of the record (a header
// name, "key" or "value") is wrong and why. It matches ErrMalformedRecord;
// Err, when set, is the underlying cause (a *ValidationError for envelope
// rules).
type RecordError struct {
	Part   string
	Reason string
	Err    error
}

func (e *RecordError) Error() string {
	if e.Err != nil && e.Reason == "" {
		return "malformed event record: " + e.Err.Error()
	}
	return "malformed event record: " + e.Part + ": " + e.Reason
}

// Is makes errors.Is(err, ErrMalformedRecord) true.
func (e *RecordError) Is(target error) bool { return target == ErrMalformedRecord }

// Unwrap returns the cause.
func (e *RecordError) Unwrap() error { return e.Err }

// ToRecord maps e to a Kafka record on Topic(topicPrefix, e.Aggregate):
// key = e.Key, value = e.Payload (nil, a tombstone, for a delete), headers
// dc-version, dc-op, dc-event-id, dc-source-ts, dc-aggregate followed by
// e.Headers sorted by name.
//
// ToRecord validates e (a *ValidationError when invalid) except for its size:
// callers that enforce a size limit use Envelope.ValidateWithLimit. The
// record's Value aliases e.Payload; the key and header values share one
// freshly allocated buffer.
func ToRecord(e Envelope, topicPrefix string) (*kgo.Record, error) {
	if err := e.validate(0, false); err != nil {
		return nil, err
	}
	const tsLen = len("2006-01-02T15:04:05.999999999Z")
	n := len(e.Key) + 20 + len(e.Op) + len(e.EventID) + tsLen + len(e.Aggregate)
	for _, v := range e.Headers {
		n += len(v)
	}
	buf := make([]byte, 0, n)
	headers := make([]kgo.RecordHeader, 0, 5+len(e.Headers))

	var b []byte
	buf, b = appendPart(buf, e.Key)
	key := b
	start := len(buf)
	buf = strconv.AppendInt(buf, e.Version, 10)
	headers = append(headers, kgo.RecordHeader{Key: HeaderVersion, Value: buf[start:len(buf):len(buf)]})
	buf, b = appendPart(buf, string(e.Op))
	headers = append(headers, kgo.RecordHeader{Key: HeaderOp, Value: b})
	buf, b = appendPart(buf, e.EventID)
	headers = append(headers, kgo.RecordHeader{Key: HeaderEventID, Value: b})
	start = len(buf)
	buf = e.SourceTime.UTC().AppendFormat(buf, time.RFC3339Nano)
	headers = append(headers, kgo.RecordHeader{Key: HeaderSourceTime, Value: buf[start:len(buf):len(buf)]})
	buf, b = appendPart(buf, e.Aggregate)
	headers = append(headers, kgo.RecordHeader{Key: HeaderAggregate, Value: b})

	switch len(e.Headers) {
	case 0:
	case 1:
		for k, v := range e.Headers {
			buf, b = appendPart(buf, v)
			headers = append(headers, kgo.RecordHeader{Key: k, Value: b})
		}
	default:
		for k, v := range e.Headers {
			buf, b = appendPart(buf, v)
			headers = append(headers, kgo.RecordHeader{Key: k, Value: b})
		}
		user := headers[5:]
		slices.SortFunc(user, func(x, y kgo.RecordHeader) int {
			switch {
			case x.Key < y.Key:
				return -1
			case x.Key > y.Key:
				return 1
			}
			return 0
		})
	}

	r := &kgo.Record{
		Topic:   Topic(topicPrefix, e.Aggregate),
		Key:     key,
		Headers: headers,
	}
	if e.Op == OpUpsert {
		r.Value = e.Payload
	}
	return r, nil
}

// appendPart appends s to buf and returns the grown buffer and the appended
// part as its own full slice (capacity capped so appends cannot overlap).
func appendPart(buf []byte, s string) ([]byte, []byte) {
	start := len(buf)
	buf = append(buf, s...)
	return buf, buf[start:len(buf):len(buf)]
}

// FromRecord maps a Kafka record back to an Envelope and validates it (size
// excepted, as in ToRecord). Every error matches ErrMalformedRecord and is a
// *RecordError naming the header or part at fault: a missing or invalid
// dc-version, dc-op, dc-event-id, dc-source-ts or dc-aggregate, a duplicated
// header, a tombstone with op upsert, a value with op delete, a value that is
// not a JSON object, an empty key.
//
// Unknown headers starting with ReservedHeaderPrefix are ignored, so newer
// producers may add some. The envelope's Payload aliases r.Value.
func FromRecord(r *kgo.Record) (Envelope, error) {
	return fromRecord(r, true)
}

// FromRecordLazy is FromRecord for consumers that parse an upsert's payload
// completely right away: it checks only that the payload starts like a JSON
// object, leaving the full JSON check to that parse (saving a second pass
// over every payload). A consumer whose parse fails must treat the record
// as malformed; FromRecord then returns the error to report.
func FromRecordLazy(r *kgo.Record) (Envelope, error) {
	return fromRecord(r, false)
}

func fromRecord(r *kgo.Record, checkJSON bool) (Envelope, error) {
	var e Envelope
	if r == nil {
		return e, &RecordError{Part: "record", Reason: "nil"}
	}
	var seen uint8 // bit per dc-* header
	const (
		seenVersion = 1 << iota
		seenOp
		seenEventID
		seenSourceTime
		seenAggregate
		seenAll = seenVersion | seenOp | seenEventID | seenSourceTime | seenAggregate
	)
	userHeaders := 0
	for i := range r.Headers {
		h := &r.Headers[i]
		var bit uint8
		switch h.Key {
		case HeaderVersion:
			bit = seenVersion
			v, ok := parseVersion(h.Value)
			if !ok {
				return e, &RecordError{Part: HeaderVersion, Reason: fmt.Sprintf("%q is not a decimal version >= 1", h.Value)}
			}
			e.Version = v
		case HeaderOp:
			bit = seenOp
			switch string(h.Value) {
			case string(OpUpsert):
				e.Op = OpUpsert
			case string(OpDelete):
				e.Op = OpDelete
			default:
				return e, &RecordError{Part: HeaderOp, Reason: fmt.Sprintf("unknown op %q (want upsert or delete)", h.Value)}
			}
		case HeaderEventID:
			bit = seenEventID
			if len(h.Value) != 36 {
				return e, &RecordError{Part: HeaderEventID, Reason: fmt.Sprintf("%q is not a canonical UUID", h.Value)}
			}
			if _, err := uuid.ParseBytes(h.Value); err != nil {
				return e, &RecordError{Part: HeaderEventID, Reason: fmt.Sprintf("%q is not a canonical UUID", h.Value)}
			}
			e.EventID = string(h.Value)
		case HeaderSourceTime:
			bit = seenSourceTime
			if err := e.SourceTime.UnmarshalText(h.Value); err != nil || e.SourceTime.IsZero() {
				return e, &RecordError{Part: HeaderSourceTime, Reason: fmt.Sprintf("%q is not an RFC 3339 timestamp", h.Value)}
			}
			e.SourceTime = e.SourceTime.UTC()
		case HeaderAggregate:
			bit = seenAggregate
			e.Aggregate = string(h.Value)
		default:
			if len(h.Key) < len(ReservedHeaderPrefix) || h.Key[:len(ReservedHeaderPrefix)] != ReservedHeaderPrefix {
				userHeaders++
			}
			continue
		}
		if seen&bit != 0 {
			return e, &RecordError{Part: h.Key, Reason: "duplicated"}
		}
		seen |= bit
	}
	if seen != seenAll {
		for _, m := range []struct {
			bit  uint8
			name string
		}{{seenVersion, HeaderVersion}, {seenOp, HeaderOp}, {seenEventID, HeaderEventID}, {seenSourceTime, HeaderSourceTime}, {seenAggregate, HeaderAggregate}} {
			if seen&m.bit == 0 {
				return e, &RecordError{Part: m.name, Reason: "missing header"}
			}
		}
	}
	if userHeaders > 0 {
		e.Headers = make(map[string]string, userHeaders)
		for i := range r.Headers {
			h := &r.Headers[i]
			if len(h.Key) >= len(ReservedHeaderPrefix) && h.Key[:len(ReservedHeaderPrefix)] == ReservedHeaderPrefix {
				continue
			}
			if _, dup := e.Headers[h.Key]; dup {
				return e, &RecordError{Part: h.Key, Reason: "duplicated header"}
			}
			e.Headers[h.Key] = string(h.Value)
		}
	}
	if len(r.Key) == 0 {
		return e, &RecordError{Part: "key", Reason: "empty"}
	}
	e.Key = string(r.Key)
	switch {
	case e.Op == OpUpsert && r.Value == nil:
		return e, &RecordError{Part: "value", Reason: "tombstone (null value) with op upsert"}
	case e.Op == OpDelete && len(r.Value) > 0:
		return e, &RecordError{Part: "value", Reason: "non-empty value with op delete"}
	case e.Op == OpUpsert:
		e.Payload = r.Value
	}
	if err := e.validateJSON(0, false, checkJSON); err != nil {
		var ve *ValidationError
		errors.As(err, &ve)
		part := ve.Field
		switch part {
		case FieldPayload:
			part = "value"
		case FieldAggregate:
			part = HeaderAggregate
		}
		return e, &RecordError{Part: part, Reason: ve.Reason, Err: err}
	}
	return e, nil
}

// parseVersion parses a decimal int64 >= 1 without allocating.
func parseVersion(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 || b[0] == '0' {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if v > (1<<63-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

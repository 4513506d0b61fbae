package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// envelopesEqual compares envelopes field by field (times with Equal, a nil
// and an empty header map alike).
func envelopesEqual(a, b Envelope) bool {
	return a.Aggregate == b.Aggregate && a.Key == b.Key && a.Version == b.Version && a.Op == b.Op &&
		bytes.Equal(a.Payload, b.Payload) && (a.Payload == nil) == (b.Payload == nil) &&
		maps.Equal(a.Headers, b.Headers) && a.EventID == b.EventID && a.SourceTime.Equal(b.SourceTime)
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func TestToRecordUpsert(t *testing.T) {
	t.Parallel()
	e := validEnvelope()
	e.Headers["baggage"] = "k=v"
	r, err := ToRecord(e, "prod")
	if err != nil {
		t.Fatalf("ToRecord: %v", err)
	}
	if got, want := r.Topic, "prod.users"; got != want {
		t.Errorf("Topic = %q, want %q", got, want)
	}
	if got, want := string(r.Key), "42"; got != want {
		t.Errorf("Key = %q, want %q", got, want)
	}
	if !bytes.Equal(r.Value, e.Payload) {
		t.Errorf("Value = %s, want %s", r.Value, e.Payload)
	}
	wantHeaders := []kgo.RecordHeader{
		{Key: "dc-version", Value: []byte("7")},
		{Key: "dc-op", Value: []byte("upsert")},
		{Key: "dc-event-id", Value: []byte("7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90")},
		{Key: "dc-source-ts", Value: []byte("2026-11-27T19:00:00.123456789Z")},
		{Key: "dc-aggregate", Value: []byte("users")},
		{Key: "baggage", Value: []byte("k=v")},
		{Key: "traceparent", Value: []byte(e.Headers["traceparent"])},
	}
	if len(r.Headers) != len(wantHeaders) {
		t.Fatalf("Headers = %q, want %q", r.Headers, wantHeaders)
	}
	for i, h := range r.Headers {
		if h.Key != wantHeaders[i].Key || !bytes.Equal(h.Value, wantHeaders[i].Value) {
			t.Errorf("Headers[%d] = %s=%q, want %s=%q", i, h.Key, h.Value, wantHeaders[i].Key, wantHeaders[i].Value)
		}
	}
}

func TestToRecordSourceTimeIsUTC(t *testing.T) {
	t.Parallel()
	e := validEnvelope()
	e.SourceTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	r, err := ToRecord(e, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := header(r, HeaderSourceTime); got != "2026-01-02T02:04:05Z" {
		t.Fatalf("dc-source-ts = %q, want 2026-01-02T02:04:05Z", got)
	}
	if r.Topic != "distcache.users" {
		t.Fatalf("Topic with empty prefix = %q, want distcache.users", r.Topic)
	}
}

func TestToRecordDeleteIsTombstone(t *testing.T) {
	t.Parallel()
	r, err := ToRecord(validDelete(), DefaultTopicPrefix)
	if err != nil {
		t.Fatalf("ToRecord: %v", err)
	}
	if r.Value != nil {
		t.Fatalf("Value = %q, want nil (tombstone)", r.Value)
	}
	if got, _ := header(r, HeaderOp); got != "delete" {
		t.Fatalf("dc-op = %q, want delete", got)
	}
}

func TestToRecordRejectsInvalidEnvelope(t *testing.T) {
	t.Parallel()
	e := validEnvelope()
	e.Op = "merge"
	_, err := ToRecord(e, "")
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != FieldOp {
		t.Fatalf("ToRecord(op merge) = %v, want *ValidationError on op", err)
	}
	// ToRecord leaves size to the caller (ValidateWithLimit).
	e = validEnvelope()
	e.Payload = json.RawMessage(`{"a":"` + strings.Repeat("x", DefaultMaxEventBytes) + `"}`)
	if _, err := ToRecord(e, ""); err != nil {
		t.Fatalf("ToRecord(2 MiB) = %v, want nil", err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	for name, e := range map[string]Envelope{
		"upsert with headers": validEnvelope(),
		"upsert many headers": func() Envelope {
			e := validEnvelope()
			e.Headers = map[string]string{"z": "1", "a": "2", "m": "", "tracestate": "x=y"}
			return e
		}(),
		"upsert no headers": func() Envelope { e := validEnvelope(); e.Headers = nil; return e }(),
		"delete tombstone":  validDelete(),
		"unicode key":       func() Envelope { e := validEnvelope(); e.Key = "ünïcødé:ключ"; return e }(),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, err := ToRecord(e, "distcache")
			if err != nil {
				t.Fatalf("ToRecord: %v", err)
			}
			got, err := FromRecord(r)
			if err != nil {
				t.Fatalf("FromRecord: %v", err)
			}
			if !envelopesEqual(got, e) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
			}
		})
	}
}

// recordOf builds a record with the given value and headers (name, value
// pairs) under key "42".
func recordOf(value []byte, kv ...string) *kgo.Record {
	r := &kgo.Record{Topic: "distcache.users", Key: []byte("42"), Value: value}
	for i := 0; i+1 < len(kv); i += 2 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return r
}

func goodHeaders(op string) []string {
	return []string{
		HeaderVersion, "3", HeaderOp, op, HeaderEventID, "7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90",
		HeaderSourceTime, "2026-11-27T19:00:00.5Z", HeaderAggregate, "users",
	}
}

// without returns kv without the pair named key.
func without(kv []string, key string) []string {
	var out []string
	for i := 0; i < len(kv); i += 2 {
		if kv[i] != key {
			out = append(out, kv[i], kv[i+1])
		}
	}
	return out
}

// with returns kv with the value of key replaced.
func with(kv []string, key, value string) []string {
	out := append([]string(nil), kv...)
	for i := 0; i < len(out); i += 2 {
		if out[i] == key {
			out[i+1] = value
		}
	}
	return out
}

func TestFromRecordRejectsMalformed(t *testing.T) {
	t.Parallel()
	obj := []byte(`{"id":42}`)
	up := goodHeaders("upsert")
	tests := []struct {
		name     string
		rec      *kgo.Record
		wantPart string
		wantIn   string
	}{
		{"nil record", nil, "record", "nil"},
		{"missing dc-version", recordOf(obj, without(up, HeaderVersion)...), HeaderVersion, "missing"},
		{"dc-version not a number", recordOf(obj, with(up, HeaderVersion, "x1")...), HeaderVersion, "not a decimal"},
		{"dc-version zero", recordOf(obj, with(up, HeaderVersion, "0")...), HeaderVersion, "not a decimal"},
		{"dc-version negative", recordOf(obj, with(up, HeaderVersion, "-1")...), HeaderVersion, "not a decimal"},
		{"dc-version leading zero", recordOf(obj, with(up, HeaderVersion, "01")...), HeaderVersion, "not a decimal"},
		{"dc-version overflow", recordOf(obj, with(up, HeaderVersion, "9223372036854775808")...), HeaderVersion, "not a decimal"},
		{"dc-version empty", recordOf(obj, with(up, HeaderVersion, "")...), HeaderVersion, "not a decimal"},
		{"missing dc-op", recordOf(obj, without(up, HeaderOp)...), HeaderOp, "missing"},
		{"unknown op", recordOf(obj, with(up, HeaderOp, "insert")...), HeaderOp, `unknown op "insert"`},
		{"missing dc-event-id", recordOf(obj, without(up, HeaderEventID)...), HeaderEventID, "missing"},
		{"bad dc-event-id", recordOf(obj, with(up, HeaderEventID, "nope")...), HeaderEventID, "UUID"},
		{"missing dc-source-ts", recordOf(obj, without(up, HeaderSourceTime)...), HeaderSourceTime, "missing"},
		{"bad dc-source-ts", recordOf(obj, with(up, HeaderSourceTime, "yesterday")...), HeaderSourceTime, "RFC 3339"},
		{"missing dc-aggregate", recordOf(obj, without(up, HeaderAggregate)...), HeaderAggregate, "missing"},
		{"bad dc-aggregate", recordOf(obj, with(up, HeaderAggregate, "a.b")...), HeaderAggregate, "contains"},
		{"duplicated dc-version", recordOf(obj, append(up, HeaderVersion, "4")...), HeaderVersion, "duplicated"},
		{"duplicated user header", recordOf(obj, append(up, "traceparent", "a", "traceparent", "b")...), "traceparent", "duplicated"},
		{"empty key", func() *kgo.Record { r := recordOf(obj, up...); r.Key = nil; return r }(), "key", "empty"},
		{"tombstone with op upsert", recordOf(nil, up...), "value", "tombstone"},
		{"value with op delete", recordOf(obj, goodHeaders("delete")...), "value", "op delete"},
		{"array payload", recordOf([]byte(`[1]`), up...), "value", "not a JSON object"},
		{"invalid json payload", recordOf([]byte(`{"a"`), up...), "value", "not a JSON object"},
		{"empty payload with upsert", recordOf([]byte{}, up...), "value", "not a JSON object"},
		{"empty user header name", recordOf(obj, append(up, "", "x")...), "headers", "empty header name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := FromRecord(tt.rec)
			var re *RecordError
			if !errors.As(err, &re) {
				t.Fatalf("FromRecord = %v, want *RecordError", err)
			}
			if re.Part != tt.wantPart {
				t.Errorf("Part = %q, want %q (err %v)", re.Part, tt.wantPart, err)
			}
			if !strings.Contains(err.Error(), tt.wantPart) || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q, want it to name %q and contain %q", err, tt.wantPart, tt.wantIn)
			}
			if !errors.Is(err, ErrMalformedRecord) {
				t.Errorf("errors.Is(err, ErrMalformedRecord) = false for %v", err)
			}
			// FromRecordLazy refuses the same records, except a payload
			// that starts like an object and is not valid JSON, which its
			// caller's parse refuses.
			_, lerr := FromRecordLazy(tt.rec)
			if tt.name == "invalid json payload" {
				if lerr != nil {
					t.Errorf("FromRecordLazy = %v, want it to leave the JSON check to the caller", lerr)
				}
			} else if lerr == nil || lerr.Error() != err.Error() {
				t.Errorf("FromRecordLazy error %v, want FromRecord's %v", lerr, err)
			}
		})
	}
}

func TestFromRecordLenient(t *testing.T) {
	t.Parallel()
	// An empty (non-nil) value with op delete is a tombstone too, and unknown
	// dc-* headers from newer producers are ignored.
	r := recordOf([]byte{}, append(goodHeaders("delete"), "dc-future", "x", "traceparent", "t")...)
	e, err := FromRecord(r)
	if err != nil {
		t.Fatalf("FromRecord: %v", err)
	}
	want := Envelope{
		Aggregate: "users", Key: "42", Version: 3, Op: OpDelete,
		Headers: map[string]string{"traceparent": "t"}, EventID: "7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90",
		SourceTime: time.Date(2026, 11, 27, 19, 0, 0, 5e8, time.UTC),
	}
	if !envelopesEqual(e, want) || e.Payload != nil {
		t.Fatalf("FromRecord:\n got %+v\nwant %+v", e, want)
	}
	// A source time with an offset is accepted and normalised to UTC.
	r = recordOf([]byte(`{}`), with(goodHeaders("upsert"), HeaderSourceTime, "2026-11-27T20:00:00+01:00")...)
	if e, err = FromRecord(r); err != nil || e.SourceTime.Location() != time.UTC || e.SourceTime.Hour() != 19 {
		t.Fatalf("FromRecord(offset time) = %v, %v; want 19:00 UTC", e.SourceTime, err)
	}
}

func TestParseVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1", 1, true}, {"42", 42, true}, {"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false}, {"99999999999999999999", 0, false},
		{"0", 0, false}, {"", 0, false}, {"+1", 0, false}, {"1e3", 0, false}, {" 1", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseVersion([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseVersion(%q) = %d, %v, want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRecordMappingAllocations(t *testing.T) {
	e := validEnvelope()
	// Record, header slice, shared buffer, topic string.
	if n := testing.AllocsPerRun(200, func() { _, _ = ToRecord(e, "distcache") }); n > 4 {
		t.Errorf("ToRecord allocates %.0f times per call, want <= 4", n)
	}
	r, err := ToRecord(e, "distcache")
	if err != nil {
		t.Fatal(err)
	}
	// Aggregate, key, event id strings, the header map and its one entry.
	if n := testing.AllocsPerRun(200, func() { _, _ = FromRecord(r) }); n > 7 {
		t.Errorf("FromRecord allocates %.0f times per call, want <= 7", n)
	}
}

func BenchmarkToRecord(b *testing.B) {
	e := validEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ToRecord(e, "distcache"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFromRecord(b *testing.B) {
	r, err := ToRecord(validEnvelope(), "distcache")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromRecord(r); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzFromRecord(f *testing.F) {
	seed := func(e Envelope) {
		r, err := ToRecord(e, "distcache")
		if err != nil {
			f.Fatal(err)
		}
		var hk, hv []string
		for _, h := range r.Headers {
			hk = append(hk, h.Key)
			hv = append(hv, string(h.Value))
		}
		f.Add(r.Key, r.Value, r.Value == nil, strings.Join(hk, "\n"), strings.Join(hv, "\n"))
	}
	seed(validEnvelope())
	seed(validDelete())
	f.Add([]byte("k"), []byte(`[]`), false, "dc-version\ndc-op", "1\nupsert")
	f.Add([]byte(""), []byte(nil), true, "", "")
	f.Fuzz(func(t *testing.T, key, value []byte, tombstone bool, hkeys, hvalues string) {
		r := &kgo.Record{Key: key, Value: value}
		if tombstone {
			r.Value = nil
		}
		ks, vs := strings.Split(hkeys, "\n"), strings.Split(hvalues, "\n")
		for i := range min(len(ks), len(vs)) {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: ks[i], Value: []byte(vs[i])})
		}
		e, err := FromRecord(r)
		if err != nil {
			if !errors.Is(err, ErrMalformedRecord) {
				t.Fatalf("FromRecord error %v does not match ErrMalformedRecord", err)
			}
			return
		}
		if err := e.ValidateWithLimit(0); err != nil {
			t.Fatalf("FromRecord returned an invalid envelope %+v: %v", e, err)
		}
		r2, err := ToRecord(e, "distcache")
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", e, err)
		}
		e2, err := FromRecord(r2)
		if err != nil {
			t.Fatalf("decoding re-encoded %+v: %v", e, err)
		}
		if !envelopesEqual(e, e2) {
			t.Fatalf("re-encode changed the envelope:\n got %+v\nwant %+v", e2, e)
		}
		if !bytes.Equal(r2.Key, r.Key) || !bytes.Equal(r2.Value, value) && !(e.Op == OpDelete) {
			t.Fatalf("re-encoded key/value %q/%q, want %q/%q", r2.Key, r2.Value, r.Key, value)
		}
	})
}

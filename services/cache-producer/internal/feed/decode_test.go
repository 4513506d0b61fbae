package feed

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
)

func record(t *testing.T, op events.Op, payload string) *kgo.Record {
	t.Helper()
	e := events.Envelope{Aggregate: "users", Key: "k1", Version: 3, Op: op, EventID: events.NewEventID(), SourceTime: time.Now()}
	if op == events.OpUpsert {
		e.Payload = []byte(`{"id":1}`)
	}
	r, err := events.ToRecord(e, "distcache")
	if err != nil {
		t.Fatal(err)
	}
	if payload != "" {
		r.Value = []byte(payload)
	}
	r.Offset = 41
	return r
}

// valueError reports whether err says the record's value (its payload) is
// not a JSON object, as opposed to a malformed envelope.
func valueError(err error) bool {
	var re *events.RecordError
	return errors.Is(err, projection.ErrPayload) || errors.As(err, &re) && re.Part == "value"
}

func TestDecode(t *testing.T) {
	t.Parallel()
	noHeaders := record(t, events.OpUpsert, "")
	noHeaders.Headers = nil
	const (
		usable    = ""
		badValue  = "value"
		malformed = "envelope"
	)
	tests := []struct {
		name       string
		rec        *kgo.Record
		wantDelete bool
		wantErr    string
	}{
		{"upsert", record(t, events.OpUpsert, `{"email":"a@x.io","n":12345678901234567890}`), false, usable},
		{"tombstone", record(t, events.OpDelete, ""), true, usable},
		{"not json", record(t, events.OpUpsert, "{oops"), false, badValue},
		{"json array", record(t, events.OpUpsert, "[1,2]"), false, badValue},
		{"no headers", noHeaders, false, malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Decode(tt.rec)
			if got.Offset != 41 || got.Key != "k1" {
				t.Errorf("offset, key = %d, %q; want 41, k1", got.Offset, got.Key)
			}
			if got.Delete != tt.wantDelete {
				t.Errorf("Delete = %v, want %v", got.Delete, tt.wantDelete)
			}
			switch {
			case tt.wantErr == usable && got.Err != nil:
				t.Errorf("Err = %v, want none", got.Err)
			case tt.wantErr == badValue && !valueError(got.Err):
				t.Errorf("Err = %v, want a payload error", got.Err)
			case tt.wantErr == malformed && (!errors.Is(got.Err, events.ErrMalformedRecord) || valueError(got.Err)):
				t.Errorf("Err = %v, want a malformed envelope", got.Err)
			}
			if n, _ := got.Payload.Lookup("n"); tt.name == "upsert" && (n.Kind != projection.KindNumber || n.Text != "12345678901234567890") {
				t.Errorf("large number lost digits: %+v", n)
			}
		})
	}
}

// keepSets are the field sets the decode tests try: all, some, none.
var keepSets = []Fields{nil, {"a": {}, "s": {}, "nested": {}, "dup": {}, "kAy": {}}, {}}

// wantPayload is projection.DecodePayload reduced to keep.
func wantPayload(b []byte, keep Fields) (map[string]any, error) {
	m, err := projection.DecodePayload(b)
	if err == nil && keep != nil {
		for k := range m {
			if _, ok := keep[k]; !ok {
				delete(m, k)
			}
		}
	}
	return m, err
}

func TestDecodePayloadMatches(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{}`, ` { } `, `{"a":1}`, `{"a":"x","b":-1.5e3,"c":true,"d":false,"e":null}`,
		`{"s":"esc\"aped\\ \u00e9 \ud83d\ude00","n":12345678901234567890123}`,
		`{"nested":{"x":[1,{"y":"z"}],"w":"}"},"arr":[1,"]",[]]}`,
		`{"dup":1,"dup":2}`, `{"k\u0041y":"v"}`, "{\"bad\":\"\xff\xfe\"}",
		`{"a":1} `, "\n{\"a\" : [ ] ,\t\"b\" : { } }\n", `{"big":1e400}`,
		`{"x":"\u00e9\/\b\f\n\r\t","a":2}`, `{"x":{"deep":[true,false,null]},"a":3}`,
		// Invalid JSON must be refused by both (Decode relies on it), in
		// fields kept or not.
		`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":1e+}`, `{"a":.5}`, `{"a":+1}`, `{"a":1.e3}`,
		`{"a":1,}`, `{"a" 1}`, `{"a":tru}`, `{"a":1}x`, "{\"a\":\"\x01\"}", `{"a":[1,]}`, `{,}`, `{"a":1`,
		`{"a":-0.0e-0}`, `{"a":0.25E+10}`,
		`{"x":01}`, `{"x":"\q"}`, `{"x":"\u12G4"}`, `{"x":"\u123"}`, "{\"x\":\"\x01\"}", `{"x":[1,]}`,
		`{"x":{"a":}}`, `{"x":nul}`, `{"x":"abc`, `{"x":"\`, `{"x":"\u00`,
	} {
		for _, keep := range keepSets {
			want, werr := wantPayload([]byte(in), keep)
			got, gerr := decodePayload([]byte(in), keep)
			if (werr == nil) != (gerr == nil) || (werr == nil && !reflect.DeepEqual(got.Map(), want)) {
				t.Errorf("decodePayload(%q, %v) = %#v, %v; DecodePayload gives %#v, %v", in, keep, got, gerr, want, werr)
			}
		}
	}
}

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":[1,2]},"c":"d\n"}`, `{"x":-0.5E+2,"y":null}`, `{"s":"\u0041","x":"\t"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, keep := range keepSets {
			if _, ok := fastObject(b, keep); ok && !json.Valid(b) {
				t.Fatalf("fastObject(%v) accepted invalid JSON %q", keep, b)
			}
			want, werr := wantPayload(b, keep)
			got, gerr := decodePayload(b, keep)
			if (werr == nil) != (gerr == nil) || (werr == nil && !reflect.DeepEqual(got.Map(), want)) {
				t.Fatalf("decodePayload(%q, %v) = %#v, %v; DecodePayload gives %#v, %v", b, keep, got, gerr, want, werr)
			}
		}
	})
}

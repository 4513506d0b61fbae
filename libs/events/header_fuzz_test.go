package events

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// frameHeaders encodes record headers for FuzzRecordHeaders: per header a length byte and the
// key, a length byte and the value (each at most 255 bytes). Unlike FuzzFromRecord's
// newline-separated form, any byte can appear in a key or value.
func frameHeaders(hs []kgo.RecordHeader) []byte {
	var b []byte
	for _, h := range hs {
		b = append(b, byte(len(h.Key)))
		b = append(b, h.Key...)
		b = append(b, byte(len(h.Value)))
		b = append(b, h.Value...)
	}
	return b
}

func unframeHeaders(b []byte) []kgo.RecordHeader {
	var hs []kgo.RecordHeader
	next := func() ([]byte, bool) {
		if len(b) == 0 {
			return nil, false
		}
		n := min(int(b[0]), len(b)-1)
		part := b[1 : 1+n]
		b = b[1+n:]
		return part, true
	}
	for {
		k, ok := next()
		if !ok {
			return hs
		}
		v, _ := next()
		hs = append(hs, kgo.RecordHeader{Key: string(k), Value: v})
	}
}

// FuzzRecordHeaders decodes records with arbitrary headers (any bytes in keys and values,
// duplicates, unknown dc-* headers, missing ones) through FromRecord and FromRecordLazy. Whatever
// the record: no panic; every refusal is a *RecordError matching ErrMalformedRecord and naming
// its part, and the same record is always refused for the same reason (found by this target:
// with several bad headers the reason followed the header map's random order); the two decoders
// agree except that only FromRecord checks the whole payload (where they differ, strict refuses
// the value and it is not valid JSON); an accepted record's dc-version
// header is the version in canonical decimal, and the envelope re-encodes (ToRecord) to a record
// that decodes to an equal envelope.
func FuzzRecordHeaders(f *testing.F) {
	for _, e := range []Envelope{validEnvelope(), validDelete()} {
		r, err := ToRecord(e, "distcache")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(r.Key, r.Value, r.Value == nil, frameHeaders(r.Headers))
		// Variants of the valid header set: a value with a newline, an unknown dc- header, a
		// duplicate, a version with a leading zero, one past int64, a source time with an offset.
		for _, change := range []func([]kgo.RecordHeader) []kgo.RecordHeader{
			func(hs []kgo.RecordHeader) []kgo.RecordHeader {
				return append(hs, kgo.RecordHeader{Key: "baggage", Value: []byte("a=1\nb=2")})
			},
			func(hs []kgo.RecordHeader) []kgo.RecordHeader {
				return append(hs, kgo.RecordHeader{Key: "dc-future", Value: []byte("x")})
			},
			func(hs []kgo.RecordHeader) []kgo.RecordHeader { return append(hs, hs[0]) },
			func(hs []kgo.RecordHeader) []kgo.RecordHeader { return setHeader(hs, HeaderVersion, "07") },
			func(hs []kgo.RecordHeader) []kgo.RecordHeader {
				return setHeader(hs, HeaderVersion, "9223372036854775808")
			},
			func(hs []kgo.RecordHeader) []kgo.RecordHeader {
				return setHeader(hs, HeaderSourceTime, "2026-11-27T20:00:00.5+01:00")
			},
		} {
			hs := change(append([]kgo.RecordHeader(nil), r.Headers...))
			f.Add(r.Key, r.Value, r.Value == nil, frameHeaders(hs))
		}
	}
	f.Add([]byte("k"), []byte(`{"a":1`), false, frameHeaders([]kgo.RecordHeader{
		{Key: HeaderVersion, Value: []byte("1")}, {Key: HeaderOp, Value: []byte("upsert")},
		{Key: HeaderEventID, Value: []byte("7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90")},
		{Key: HeaderSourceTime, Value: []byte("2026-11-27T19:00:00Z")}, {Key: HeaderAggregate, Value: []byte("users")},
	}))
	f.Fuzz(func(t *testing.T, key, value []byte, tombstone bool, headers []byte) {
		r := &kgo.Record{Key: key, Value: value, Headers: unframeHeaders(headers)}
		if tombstone {
			r.Value = nil
		}
		strict, serr := FromRecord(r)
		lazy, lerr := FromRecordLazy(r)
		for _, err := range []error{serr, lerr} {
			var re *RecordError
			if err != nil && (!errors.Is(err, ErrMalformedRecord) || !errors.As(err, &re) || re.Part == "") {
				t.Fatalf("error %v is not a *RecordError naming its part", err)
			}
		}
		switch {
		case serr != nil:
			// One record is always refused for the same reason.
			if _, again := FromRecord(r); again == nil || again.Error() != serr.Error() {
				t.Fatalf("the same record refused for %q, then for %v", serr, again)
			}
			if lerr != nil && lerr.Error() == serr.Error() {
				return
			}
			// Otherwise strict refused for the payload, which only it checks whole.
			var re *RecordError
			errors.As(serr, &re)
			if re.Part != "value" || json.Valid(r.Value) {
				t.Fatalf("strict refused (%v), lazy said %v, and the payload is not the difference (valid JSON: %v)", serr, lerr, json.Valid(r.Value))
			}
			return
		case lerr != nil:
			t.Fatalf("lazy refused (%v) what strict accepted", lerr)
		}
		if !envelopesEqual(strict, lazy) {
			t.Fatalf("strict %+v and lazy %+v differ", strict, lazy)
		}
		for _, h := range r.Headers {
			if h.Key == HeaderVersion && string(h.Value) != strconv.FormatInt(strict.Version, 10) {
				t.Fatalf("dc-version %q accepted as version %d: not canonical decimal", h.Value, strict.Version)
			}
			if strings.HasPrefix(h.Key, ReservedHeaderPrefix) {
				continue
			}
			if strict.Headers[h.Key] != string(h.Value) {
				t.Fatalf("header %q = %q lost or changed: %q", h.Key, h.Value, strict.Headers[h.Key])
			}
		}
		r2, err := ToRecord(strict, "distcache")
		if err != nil {
			t.Fatalf("accepted %+v does not re-encode: %v", strict, err)
		}
		e2, err := FromRecord(r2)
		if err != nil || !envelopesEqual(strict, e2) {
			t.Fatalf("re-encoded %+v decodes to %+v, %v", strict, e2, err)
		}
	})
}

func setHeader(hs []kgo.RecordHeader, key, value string) []kgo.RecordHeader {
	for i := range hs {
		if hs[i].Key == key {
			hs[i].Value = []byte(value)
		}
	}
	return hs
}

package feed

import (
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/events"
)

// fuzzRecord builds a record from FuzzDecodeRecord's input: the envelope headers of a valid
// event, then extra headers framed as length byte + key, length byte + value.
func fuzzRecord(key, value []byte, tombstone, deleteOp bool, extra []byte) *kgo.Record {
	op := events.OpUpsert
	if deleteOp {
		op = events.OpDelete
	}
	e := events.Envelope{Aggregate: "users", Key: "k", Version: 3, Op: op, EventID: "7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90",
		SourceTime: time.Date(2026, 11, 27, 19, 0, 0, 0, time.UTC)}
	if op == events.OpUpsert {
		e.Payload = []byte(`{}`)
	}
	r, err := events.ToRecord(e, "distcache")
	if err != nil {
		panic(err)
	}
	r.Key, r.Value, r.Offset, r.Topic = key, value, 1234, "distcache.users"
	if tombstone {
		r.Value = nil
	}
	for len(extra) > 0 {
		n := min(int(extra[0]), len(extra)-1)
		k := extra[1 : 1+n]
		extra = extra[1+n:]
		var v []byte
		if len(extra) > 0 {
			n = min(int(extra[0]), len(extra)-1)
			v = extra[1 : 1+n]
			extra = extra[1+n:]
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(k), Value: v})
	}
	return r
}

// FuzzDecodeRecord: the producer's record decoder (DecodeFields: events.FromRecordLazy, then the
// JSON scanner) takes any record (key, value, op, tombstone, extra headers of any bytes) exactly
// as the reference path does (events.FromRecord, then projection.DecodePayload reduced to the
// kept fields): it refuses a record iff the reference does, and then for the reference's reason
// whenever the header checks pass (the one difference allowed: FromRecordLazy may name a header
// where FromRecord names the value first); it keeps the offset, topic and key, marks a
// delete iff the op is delete, and an upsert's payload equals the reference's.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte("42"), []byte(`{"a":1,"s":"x","nested":{"b":[1]},"other":true}`), false, false, []byte("\x0btraceparent\x0300-"))
	f.Add([]byte("42"), []byte(nil), true, true, []byte(nil))
	f.Add([]byte("42"), []byte(`{"a":1`), false, false, []byte(nil))
	f.Add([]byte("42"), []byte(`[1,2]`), false, false, []byte("\x00\x01x"))
	f.Add([]byte(""), []byte(`{}`), false, false, []byte("\x05dc-op\x06delete"))
	f.Add([]byte("k"), []byte(`{"dup":1,"dup":2,"kAy":"\u00e9"}`), false, false, []byte("\x03a\nb\x01\xff"))
	f.Fuzz(func(t *testing.T, key, value []byte, tombstone, deleteOp bool, extra []byte) {
		r := fuzzRecord(key, value, tombstone, deleteOp, extra)
		ref, refErr := events.FromRecord(r)
		for _, keep := range keepSets {
			got := DecodeFields(r, keep)
			if got.Offset != r.Offset || got.Topic != r.Topic || got.Key != string(r.Key) {
				t.Fatalf("offset/topic/key %d %q %q, want %d %q %q", got.Offset, got.Topic, got.Key, r.Offset, r.Topic, r.Key)
			}
			if refErr != nil {
				if got.Err == nil {
					t.Fatalf("DecodeFields accepted a record FromRecord refuses (%v): %+v", refErr, got)
				}
				if _, lazyErr := events.FromRecordLazy(r); lazyErr == nil && got.Err.Error() != refErr.Error() {
					t.Fatalf("DecodeFields refused for %q, FromRecord for %q", got.Err, refErr)
				}
				continue
			}
			if got.Delete != (ref.Op == events.OpDelete) {
				t.Fatalf("Delete = %v for op %s", got.Delete, ref.Op)
			}
			if got.Delete {
				if got.Err != nil || got.Payload != nil {
					t.Fatalf("delete decoded with error %v, payload %v", got.Err, got.Payload)
				}
				continue
			}
			want, werr := wantPayload(ref.Payload, keep)
			if (werr == nil) != (got.Err == nil) {
				t.Fatalf("payload %q: DecodeFields error %v, DecodePayload error %v", ref.Payload, got.Err, werr)
			}
			if werr != nil {
				if !valueError(got.Err) {
					t.Fatalf("payload %q refused with %v, not as the value", ref.Payload, got.Err)
				}
				continue
			}
			if m := got.Payload.Map(); !reflect.DeepEqual(m, want) && !(len(m) == 0 && len(want) == 0) {
				t.Fatalf("payload %q keep %v: %#v, want %#v", ref.Payload, keep, m, want)
			}
		}
	})
}

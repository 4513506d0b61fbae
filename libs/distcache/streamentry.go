package distcache

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Change-stream entries come in two forms, and readers accept both:
//
//   - one field per change, named by the user key, whose value is the value
//     exactly as stored (<16 hex digits of version><op><payload>); what
//     Publisher.Apply's scripts write;
//   - one field named "" (no user key is empty) holding a packed batch:
//     the byte packedV1, then per change, in order, uvarint(len(key)) key
//     uvarint(len(value)) value, value as stored; what Publisher.WriteTx
//     writes. Redis stores a 128-change entry as one string instead of 256
//     listpack fields (plus the field names again in the node's master
//     entry): about 0.3 µs of Redis CPU per change instead of 0.6.
//
// Libraries older than the packed form skip a packed entry (its field name
// is not a valid key), so edges must be upgraded before cache-producers.
//
// The format marker: field "" is reserved for marked forms, and the first
// byte of its value names the form (packedV1 today). An entry without field
// "" is the per-key form. A writer that introduces a new form gives it a new
// marker byte; a reader that meets a marker it does not know gets
// ErrUnknownEntryForm and must not treat the entry as empty: the edge client
// revalidates the projection (refetches every key it holds), counts the
// entry (ProjectionStats.UnknownEntries) and logs each unknown form once.

// packedField names the field of a packed entry.
const packedField = ""

// packedV1 is the first byte of a packed entry's value.
const packedV1 = 1

// errPackedEntry reports a packed entry that does not decode.
var errPackedEntry = errors.New("malformed packed change-stream entry")

// ErrUnknownEntryForm is returned (wrapped, naming the marker byte) by
// EachStreamChange for a change-stream entry whose format marker this library
// does not know: an entry written by a newer writer. Its changes cannot be
// read, so whoever follows the stream must revalidate what it holds.
var ErrUnknownEntryForm = errors.New("unknown change-stream entry form")

// UnknownEntryForm is the error for an entry of an unknown form: Marker is
// the first byte of its "" field (-1 when that field is empty).
type UnknownEntryForm struct{ Marker int }

func (e *UnknownEntryForm) Error() string {
	if e.Marker < 0 {
		return ErrUnknownEntryForm.Error() + ": empty marker"
	}
	return fmt.Sprintf("%s: marker 0x%02x", ErrUnknownEntryForm, e.Marker)
}

func (e *UnknownEntryForm) Unwrap() error { return ErrUnknownEntryForm }

// appendPacked appends one change to a packed entry's value (b starts with
// packedV1).
func appendPacked(b []byte, key, value string) []byte {
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

// EachStreamChange calls f with the key and stored value
// (<16 hex digits of version><op><payload>) of every change of one
// change-stream entry, its fields as go-redis returns them (XMessage.Values),
// in order within a packed entry. It returns an error, after the changes
// before it, when a packed entry does not decode.
func EachStreamChange(fields map[string]any, f func(key, value string)) error {
	for k, v := range fields {
		s, _ := v.(string)
		if k != packedField {
			f(k, s)
			continue
		}
		if err := eachPacked(s, f); err != nil {
			return err
		}
	}
	return nil
}

func eachPacked(s string, f func(key, value string)) error {
	if len(s) == 0 {
		return &UnknownEntryForm{Marker: -1}
	}
	if s[0] != packedV1 {
		return &UnknownEntryForm{Marker: int(s[0])}
	}
	i := 1
	next := func() (string, bool) {
		n, w := binary.Uvarint([]byte(s[i:min(i+binary.MaxVarintLen64, len(s))]))
		if w <= 0 || n > uint64(len(s)-i-w) {
			return "", false
		}
		i += w
		out := s[i : i+int(n)]
		i += int(n)
		return out, true
	}
	for i < len(s) {
		key, ok := next()
		if !ok {
			return fmt.Errorf("%w: truncated at byte %d", errPackedEntry, i)
		}
		value, ok := next()
		if !ok {
			return fmt.Errorf("%w: truncated at byte %d", errPackedEntry, i)
		}
		f(key, value)
	}
	return nil
}

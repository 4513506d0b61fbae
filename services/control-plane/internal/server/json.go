package server

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
)

// fieldNamingJSON is runtime.JSONPb whose decoder, when a request body does not decode, finds
// the top-level field at fault and names it ("field \"fields\": ..."), since protojson's own
// message only gives a position.
type fieldNamingJSON struct {
	*runtime.JSONPb
}

// NewDecoder implements runtime.Marshaler.
func (m fieldNamingJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		raw, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if len(raw) == 0 {
			return io.EOF
		}
		if err := m.Unmarshal(raw, v); err != nil {
			if field := m.culprit(raw, v); field != "" {
				return fmt.Errorf("field %q: %w", field, err)
			}
			return err
		}
		return nil
	})
}

// culprit returns the first top-level field of a JSON object body that fails to decode on its
// own into a fresh value of v's type, or "".
func (m fieldNamingJSON) culprit(raw []byte, v any) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return ""
	}
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return ""
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		one, err := json.Marshal(map[string]json.RawMessage{k: obj[k]})
		if err != nil {
			continue
		}
		if m.Unmarshal(one, reflect.New(t.Elem()).Interface()) != nil {
			return k
		}
	}
	return ""
}

var _ runtime.Marshaler = fieldNamingJSON{}

// unmarshalOptions refuses unknown fields: a misspelt field is an error, not a silent default.
var unmarshalOptions = protojson.UnmarshalOptions{DiscardUnknown: false}

package projection

import (
	"encoding/json"
	"strconv"
)

// Kind is the JSON type of a Value.
type Kind uint8

// Kinds of Value.
const (
	KindNull   Kind = iota
	KindString      // Text is the string
	KindNumber      // Text is the number as written (what json.Number holds)
	KindBool        // Text is "true" or "false"
	KindOther       // Any holds the value as encoding/json decodes it (objects, arrays)
)

// Value is one member value of a decoded payload. Scalars are held as text,
// without the interface box a map[string]any needs for each of them.
type Value struct {
	Kind Kind
	Text string
	Any  any
}

// Member is one named member of a decoded payload.
type Member struct {
	Name string
	Value
}

// Members is a decoded payload as a list of members: the form a hot path
// decodes into without a map or an allocation per value. A name may appear
// twice, as JSON allows; the last one counts, as with encoding/json.
// Key, Match and Project give the same results for a Members as for the
// map DecodePayload returns for the same JSON (FuzzMembersMatchMap).
type Members []Member

// Lookup returns the value of the member called name.
func (ms Members) Lookup(name string) (Value, bool) {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Name == name {
			return ms[i].Value, true
		}
	}
	return Value{}, false
}

// Map returns ms as the map DecodePayload would return.
func (ms Members) Map() map[string]any {
	m := make(map[string]any, len(ms))
	for _, x := range ms {
		m[x.Name] = x.Interface()
	}
	return m
}

// Interface returns v as encoding/json decodes it with UseNumber.
func (v Value) Interface() any {
	switch v.Kind {
	case KindString:
		return v.Text
	case KindNumber:
		return json.Number(v.Text)
	case KindBool:
		return v.Text == "true"
	case KindOther:
		return v.Any
	}
	return nil
}

// ValueOf is the Value of x, a value of a map[string]any payload.
func ValueOf(x any) Value {
	switch t := x.(type) {
	case nil:
		return Value{}
	case string:
		return Value{Kind: KindString, Text: t}
	case json.Number:
		return Value{Kind: KindNumber, Text: string(t)}
	case bool:
		return Value{Kind: KindBool, Text: strconv.FormatBool(t)}
	}
	return Value{Kind: KindOther, Any: x}
}

// payload is what Key, Match and Project read a payload through: a
// map[string]any (mapPayload) or Members.
type payload interface {
	Lookup(name string) (Value, bool)
}

type mapPayload map[string]any

func (m mapPayload) Lookup(name string) (Value, bool) {
	x, ok := m[name]
	if !ok {
		return Value{}, false
	}
	return ValueOf(x), true
}

// text is the text form of a scalar (as scalarText has it); false for
// objects and arrays.
func (v Value) text() (string, bool) {
	switch v.Kind {
	case KindNull:
		return "null", true
	case KindString, KindNumber, KindBool:
		return v.Text, true
	}
	return scalarText(v.Any)
}

// appendJSON appends v's JSON encoding, byte for byte what marshalNoHTML
// writes for v.Interface().
func (v Value) appendJSON(b []byte) ([]byte, error) {
	switch v.Kind {
	case KindNull:
		return append(b, "null"...), nil
	case KindBool:
		return append(b, v.Text...), nil
	case KindString:
		if plainString(v.Text) {
			b = append(b, '"')
			b = append(b, v.Text...)
			return append(b, '"'), nil
		}
		return appendJSON(b, v.Text)
	case KindNumber:
		if validNumber(v.Text) {
			return append(b, v.Text...), nil
		}
		return appendJSON(b, json.Number(v.Text))
	}
	return appendJSON(b, v.Any)
}

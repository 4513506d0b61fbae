package projection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// ErrPayload wraps a payload that is not a JSON object.
var ErrPayload = errors.New("payload is not a JSON object")

// DecodePayload decodes a record value (a JSON object) keeping numbers as json.Number, so a
// 64-bit id renders in a key and a value exactly as the core wrote it.
func DecodePayload(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: null", ErrPayload)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data", ErrPayload)
	}
	return m, nil
}

// Projection is a compiled Definition, safe for concurrent use.
type Projection struct {
	def      Definition
	template Template
	names    [][]byte // each field's JSON-quoted name and a colon
}

// Compile validates d and parses its template.
func Compile(d Definition) (*Projection, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	t, err := ParseKeyTemplate(d.KeyTemplate)
	if err != nil { // unreachable after Validate; kept so a change there cannot panic here
		return nil, fmt.Errorf("parse key template: %w", err)
	}
	names := make([][]byte, len(d.Fields))
	for i, f := range d.Fields {
		q, _ := json.Marshal(f) // a field name always marshals
		names[i] = append(q, ':')
	}
	return &Projection{def: d, template: t, names: names}, nil
}

// Definition returns the definition the projection was compiled from.
func (p *Projection) Definition() Definition { return p.def }

// Reads lists every payload field Key, Match and Project look at: the key
// template's fields, the filter's field and the kept fields. A payload
// reduced to these fields projects exactly as the whole one.
func (p *Projection) Reads() []string {
	out := p.template.Fields()
	add := func(f string) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if p.def.Filter != nil {
		add(p.def.Filter.Field)
	}
	for _, f := range p.def.Fields {
		add(f)
	}
	return out
}

// Key renders the payload's key, lowercased when the definition asks for it.
func (p *Projection) Key(payload map[string]any) (string, error) { return key(p, mapPayload(payload)) }

// KeyMembers is Key for a payload decoded as Members.
func (p *Projection) KeyMembers(payload Members) (string, error) { return key(p, payload) }

func key[P payload](p *Projection, payload P) (string, error) {
	k, err := render(p.template, payload)
	if err != nil {
		return "", err
	}
	if p.def.LowercaseKey {
		k = strings.ToLower(k)
	}
	return k, nil
}

// Match reports whether the payload passes the definition's filter.
func (p *Projection) Match(payload map[string]any) bool {
	return match(p.def.Filter, mapPayload(payload))
}

// MatchMembers is Match for a payload decoded as Members.
func (p *Projection) MatchMembers(payload Members) bool { return match(p.def.Filter, payload) }

// Project returns the JSON object of the kept fields, in the definition's field order. A field the
// payload lacks is left out (not written as null), so adding a field to the model does not change
// existing values until a projection asks for it.
func (p *Projection) Project(payload map[string]any) ([]byte, error) {
	return project(p, mapPayload(payload))
}

// ProjectMembers is Project for a payload decoded as Members.
func (p *Projection) ProjectMembers(payload Members) ([]byte, error) { return project(p, payload) }

func project[P payload](p *Projection, payload P) ([]byte, error) {
	b := make([]byte, 0, 128)
	b = append(b, '{')
	n := 0
	for i, f := range p.def.Fields {
		v, ok := payload.Lookup(f)
		if !ok {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, p.names[i]...)
		var err error
		if b, err = v.appendJSON(b); err != nil {
			return nil, fmt.Errorf("field %q: %w", f, err)
		}
		n++
	}
	b = append(b, '}')
	return b, nil
}

// appendJSON appends v's encoding/json encoding to b, without HTML escaping:
// the common scalar shapes of a decoded payload directly (byte for byte what
// marshalNoHTML writes), anything else through marshalNoHTML.
func appendJSON(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case json.Number:
		if validNumber(string(x)) {
			return append(b, x...), nil
		}
	case string:
		if plainString(x) {
			b = append(b, '"')
			b = append(b, x...)
			return append(b, '"'), nil
		}
	}
	return marshalNoHTML(b, v)
}

// marshalNoHTML appends encoding/json's encoding of v without HTML escaping:
// '<', '>' and '&' stay one byte each instead of six ("\u003c"), so a value
// under the size limit before projection does not grow past it. Projected
// values are data for services, never embedded in HTML by this project.
func marshalNoHTML(b []byte, v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...), nil
}

// plainString reports whether encoding/json (without HTML escaping) writes s
// as itself in quotes: printable ASCII without '"' and '\\'.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// validNumber reports whether s is a JSON number (json.Marshal refuses a
// json.Number that is not; leave those to it).
func validNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		digits()
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// Apply decodes one record value and returns its key and projected value. keep is false when the
// filter drops the record; the caller then treats it as a delete of key, when key is known, so a
// record that stops matching leaves the projection. An error means the record cannot be projected
// (bad JSON, a missing key field); the caller decides whether to skip it or dead-letter it.
func (p *Projection) Apply(raw []byte) (key string, value []byte, keep bool, err error) {
	payload, err := DecodePayload(raw)
	if err != nil {
		return "", nil, false, err
	}
	key, err = p.Key(payload)
	if err != nil {
		return "", nil, false, err
	}
	if !p.Match(payload) {
		return key, nil, false, nil
	}
	value, err = p.Project(payload)
	if err != nil {
		return "", nil, false, err
	}
	return key, value, true, nil
}

package projection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	return &Projection{def: d, template: t}, nil
}

// Definition returns the definition the projection was compiled from.
func (p *Projection) Definition() Definition { return p.def }

// Key renders the payload's key, lowercased when the definition asks for it.
func (p *Projection) Key(payload map[string]any) (string, error) {
	k, err := p.template.Render(payload)
	if err != nil {
		return "", err
	}
	if p.def.LowercaseKey {
		k = strings.ToLower(k)
	}
	return k, nil
}

// Match reports whether the payload passes the definition's filter.
func (p *Projection) Match(payload map[string]any) bool { return p.def.Filter.Match(payload) }

// Project returns the JSON object of the kept fields, in the definition's field order. A field the
// payload lacks is left out (not written as null), so adding a field to the model does not change
// existing values until a projection asks for it.
func (p *Projection) Project(payload map[string]any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	for _, f := range p.def.Fields {
		v, ok := payload[f]
		if !ok {
			continue
		}
		val, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f, err)
		}
		if n > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(f) // a field name always marshals
		b.Write(name)
		b.WriteByte(':')
		b.Write(val)
		n++
	}
	b.WriteByte('}')
	return b.Bytes(), nil
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

package projection

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Errors of key rendering; wrapped with the field's name.
var (
	// ErrMissingField: the payload has no such field (or it is JSON null).
	ErrMissingField = errors.New("missing field")
	// ErrNotScalar: the field is an object or an array, which cannot be part of a key.
	ErrNotScalar = errors.New("field is not a scalar")
	// ErrEmptyKey: the rendered key is empty.
	ErrEmptyKey = errors.New("empty key")
)

// MaxKeyLen bounds a rendered key; longer keys are refused rather than stored.
const MaxKeyLen = 1024

// Template is a parsed key template: literal text and {field} placeholders.
type Template struct {
	parts  []part
	source string
}

type part struct {
	literal string
	field   string // set for a placeholder
}

// ParseKeyTemplate parses a template such as "{email}" or "{org_id}:{slug}". A placeholder is
// {name} with a field name (letters, digits, '_'); "{{" and "}}" are literal braces. A template
// needs at least one placeholder (a key built from literals alone would put every record under
// one key) and may not put two placeholders side by side with no literal between them (the key
// "ab" of "{x}{y}" could be x="a",y="b" or x="ab",y="").
func ParseKeyTemplate(s string) (Template, error) {
	if s == "" {
		return Template{}, errors.New("empty template")
	}
	if len(s) > MaxTemplateLen {
		return Template{}, fmt.Errorf("template longer than %d bytes", MaxTemplateLen)
	}
	t := Template{source: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, part{literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '{' && i+1 < len(s) && s[i+1] == '{':
			lit.WriteByte('{')
			i += 2
		case c == '}' && i+1 < len(s) && s[i+1] == '}':
			lit.WriteByte('}')
			i += 2
		case c == '{':
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return Template{}, fmt.Errorf("unclosed '{' at offset %d", i)
			}
			name := s[i+1 : i+1+end]
			if !validField(name) {
				return Template{}, fmt.Errorf("placeholder {%s} at offset %d is not a field name", name, i)
			}
			flush()
			if n := len(t.parts); n > 0 && t.parts[n-1].field != "" {
				return Template{}, fmt.Errorf("placeholder {%s} at offset %d follows another placeholder with no separator", name, i)
			}
			t.parts = append(t.parts, part{field: name})
			i += end + 2
		case c == '}':
			return Template{}, fmt.Errorf("unmatched '}' at offset %d (write '}}' for a literal brace)", i)
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush()
	if len(t.Fields()) == 0 {
		return Template{}, errors.New("template has no {field} placeholder")
	}
	return t, nil
}

// String returns the template's source text.
func (t Template) String() string { return t.source }

// Fields returns the placeholder fields in order of appearance, each once.
func (t Template) Fields() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range t.parts {
		if p.field != "" && !seen[p.field] {
			seen[p.field] = true
			out = append(out, p.field)
		}
	}
	return out
}

// Render builds the key of a payload. Every placeholder field must be present and a scalar
// (string, number or boolean); the error wraps ErrMissingField or ErrNotScalar and names the field.
func (t Template) Render(payload map[string]any) (string, error) {
	return render(t, mapPayload(payload))
}

// RenderMembers is Render for a payload decoded as Members.
func (t Template) RenderMembers(payload Members) (string, error) { return render(t, payload) }

func render[P payload](t Template, payload P) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.field == "" {
			b.WriteString(p.literal)
			continue
		}
		v, ok := payload.Lookup(p.field)
		if !ok || v.Kind == KindNull {
			return "", fmt.Errorf("key field %q: %w", p.field, ErrMissingField)
		}
		s, ok := v.text()
		if !ok {
			return "", fmt.Errorf("key field %q: %w", p.field, ErrNotScalar)
		}
		b.WriteString(s)
	}
	if b.Len() == 0 {
		return "", ErrEmptyKey
	}
	if b.Len() > MaxKeyLen {
		return "", fmt.Errorf("key longer than %d bytes", MaxKeyLen)
	}
	return b.String(), nil
}

// scalarText is the text form of a JSON scalar; false for objects and arrays.
func scalarText(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "null", true
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return "", false
		}
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	}
	return "", false
}

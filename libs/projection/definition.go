// Package projection holds what a projection is, shared by the control-plane (which validates and
// stores definitions) and the cache-producer (which applies them to every record of a topic):
// the Definition, its validation, key templates, filters and the projection of a payload onto the
// kept fields.
//
// A payload is the JSON after-image of one aggregate, decoded with DecodePayload (numbers stay
// json.Number so large integers keep every digit). A Definition is compiled once with Compile and
// then applied to many payloads:
//
//	p, err := projection.Compile(def)
//	key, value, keep, err := p.Apply(rawPayload)
package projection

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/distcache/distcache/libs/events"
)

// Limits of a definition. They keep Redis keys and registry rows small.
const (
	MaxNameLen     = 63
	MaxFieldLen    = 63
	MaxFields      = 256
	MaxTemplateLen = 512
	MaxFilterVals  = 256
	MaxFilterValue = 1024
)

var (
	nameRe  = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	fieldRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ErrInvalid is wrapped by every *ValidationError, so callers can test errors.Is(err, ErrInvalid).
var ErrInvalid = errors.New("invalid projection definition")

// Violation names one bad field of a request and says what is wrong with it. Field is a path in
// the JSON form of the definition: "name", "key_template", "fields[2]", "filter.op".
type Violation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

// ValidationError lists every violation found, in the order of the definition's fields.
type ValidationError struct {
	Violations []Violation
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid projection definition: " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func (e *ValidationError) add(field, format string, args ...any) {
	e.Violations = append(e.Violations, Violation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (e *ValidationError) errOrNil() error {
	if e == nil || len(e.Violations) == 0 {
		return nil
	}
	return e
}

// Filter operators.
const (
	OpEq    = "eq"     // the field equals Values[0]
	OpIn    = "in"     // the field equals one of Values
	OpNotEq = "not_eq" // the field is present and differs from Values[0]
	OpNotIn = "not_in" // the field is present and equals none of Values
)

// Filter keeps only the records whose Field matches. Values compare with the field's scalar text
// form: strings as they are, numbers in their JSON spelling, booleans as "true"/"false", JSON null
// as "null". A record whose field is absent, or an object or array, never matches.
type Filter struct {
	Field  string   `json:"field"`
	Op     string   `json:"op"`
	Values []string `json:"values"`
}

// Definition is one projection: which model it reads, how it keys a record, which fields it keeps
// and which records it keeps. It is stored in the registry (distcache_projections and, as a
// snapshot, distcache_generations.definition) in this JSON form.
type Definition struct {
	// Name of the projection: lowercase letters, digits, '_' and '-', starting with a letter. It
	// is part of every Redis key of the projection, so it never holds ':' or braces.
	Name string `json:"name"`
	// Model is the aggregate (source model) whose topic is read, e.g. "users".
	Model string `json:"model"`
	// KeyTemplate builds the edge's key from payload fields: "{email}", "{org_id}:{slug}".
	// "{{" and "}}" stand for literal braces.
	KeyTemplate string `json:"key_template"`
	// LowercaseKey lowercases the rendered key (case-insensitive lookups such as e-mail).
	LowercaseKey bool `json:"lowercase_key"`
	// Fields kept in the projected value, in this order; at least one.
	Fields []string `json:"fields"`
	// Filter is optional; nil keeps every record.
	Filter *Filter `json:"filter,omitempty"`
}

// Validate checks the definition on its own: names, template syntax, fields and filter. Every
// violation is reported, each naming its field. The returned error is a *ValidationError.
func (d Definition) Validate() error {
	v := &ValidationError{}
	d.validate(v)
	return v.errOrNil()
}

// ValidateAgainst is Validate plus a check that every field the definition names (in the key
// template, the kept fields and the filter) is one of modelFields, the fields the model's
// payloads carry.
func (d Definition) ValidateAgainst(modelFields []string) error {
	v := &ValidationError{}
	d.validate(v)
	known := make(map[string]bool, len(modelFields))
	for _, f := range modelFields {
		known[f] = true
	}
	if t, err := ParseKeyTemplate(d.KeyTemplate); err == nil {
		for _, f := range t.Fields() {
			if !known[f] {
				v.add("key_template", "field %q is not a field of model %q", f, d.Model)
			}
		}
	}
	for i, f := range d.Fields {
		if fieldRe.MatchString(f) && !known[f] {
			v.add(fmt.Sprintf("fields[%d]", i), "field %q is not a field of model %q", f, d.Model)
		}
	}
	if d.Filter != nil && fieldRe.MatchString(d.Filter.Field) && !known[d.Filter.Field] {
		v.add("filter.field", "field %q is not a field of model %q", d.Filter.Field, d.Model)
	}
	return v.errOrNil()
}

func (d Definition) validate(v *ValidationError) {
	ValidateName(v, "name", d.Name)
	// A model is an event aggregate: libs/events owns the rule (it names the model's topic).
	var bad *events.ValidationError
	if d.Model == "" {
		v.add("model", "is required")
	} else if errors.As(events.ValidateAggregateName(d.Model), &bad) {
		v.add("model", "%s", bad.Reason)
	}
	if d.KeyTemplate == "" {
		v.add("key_template", "is required")
	} else if _, err := ParseKeyTemplate(d.KeyTemplate); err != nil {
		v.add("key_template", "%v", err)
	}
	if len(d.Fields) == 0 {
		v.add("fields", "at least one field is required")
	}
	if len(d.Fields) > MaxFields {
		v.add("fields", "more than %d fields", MaxFields)
	}
	seen := make(map[string]bool, len(d.Fields))
	for i, f := range d.Fields {
		path := fmt.Sprintf("fields[%d]", i)
		switch {
		case !validField(f):
			v.add(path, "%q is not a field name (letters, digits and '_', at most %d bytes)", f, MaxFieldLen)
		case seen[f]:
			v.add(path, "%q is listed twice", f)
		}
		seen[f] = true
	}
	if d.Filter != nil {
		d.Filter.validate(v, "filter")
	}
}

// ValidateName records a violation under field if name is not a valid projection name.
func ValidateName(v *ValidationError, field, name string) {
	switch {
	case name == "":
		v.add(field, "is required")
	case len(name) > MaxNameLen:
		v.add(field, "is longer than %d bytes", MaxNameLen)
	case !nameRe.MatchString(name):
		v.add(field, "must match %s", nameRe)
	}
}

// CheckName returns a *ValidationError naming field if name is not a valid projection name.
func CheckName(field, name string) error {
	v := &ValidationError{}
	ValidateName(v, field, name)
	return v.errOrNil()
}

func validField(f string) bool { return len(f) <= MaxFieldLen && fieldRe.MatchString(f) }

func (f *Filter) validate(v *ValidationError, prefix string) {
	if !validField(f.Field) {
		v.add(prefix+".field", "%q is not a field name", f.Field)
	}
	switch f.Op {
	case OpEq, OpNotEq:
		if len(f.Values) != 1 {
			v.add(prefix+".values", "op %q takes exactly one value, got %d", f.Op, len(f.Values))
		}
	case OpIn, OpNotIn:
		if len(f.Values) == 0 {
			v.add(prefix+".values", "op %q takes at least one value", f.Op)
		}
	case "":
		v.add(prefix+".op", "is required (one of eq, in, not_eq, not_in)")
	default:
		v.add(prefix+".op", "unknown op %q (one of eq, in, not_eq, not_in)", f.Op)
	}
	if len(f.Values) > MaxFilterVals {
		v.add(prefix+".values", "more than %d values", MaxFilterVals)
	}
	for i, val := range f.Values {
		if len(val) > MaxFilterValue {
			v.add(fmt.Sprintf("%s.values[%d]", prefix, i), "longer than %d bytes", MaxFilterValue)
		}
	}
}

// Match reports whether the payload passes the filter. A nil filter matches everything.
func (f *Filter) Match(payload map[string]any) bool { return match(f, mapPayload(payload)) }

// MatchMembers is Match for a payload decoded as Members.
func (f *Filter) MatchMembers(payload Members) bool { return match(f, payload) }

func match[P payload](f *Filter, payload P) bool {
	if f == nil {
		return true
	}
	v, ok := payload.Lookup(f.Field)
	if !ok {
		return false
	}
	s, ok := v.text()
	if !ok {
		return false
	}
	found := slices.Contains(f.Values, s)
	switch f.Op {
	case OpEq, OpIn:
		return found
	case OpNotEq, OpNotIn:
		return !found
	}
	return false
}

// Equal reports whether two definitions are the same (fields in order, filter values in order).
func (d Definition) Equal(o Definition) bool {
	if d.Name != o.Name || d.Model != o.Model || d.KeyTemplate != o.KeyTemplate ||
		d.LowercaseKey != o.LowercaseKey || !slices.Equal(d.Fields, o.Fields) {
		return false
	}
	if (d.Filter == nil) != (o.Filter == nil) {
		return false
	}
	if d.Filter == nil {
		return true
	}
	return d.Filter.Field == o.Filter.Field && d.Filter.Op == o.Filter.Op && slices.Equal(d.Filter.Values, o.Filter.Values)
}

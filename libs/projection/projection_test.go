package projection

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func validDef() Definition {
	return Definition{
		Name:         "users_by_email",
		Model:        "users",
		KeyTemplate:  "{email}",
		LowercaseKey: true,
		Fields:       []string{"id", "email", "name"},
		Filter:       &Filter{Field: "status", Op: OpEq, Values: []string{"active"}},
	}
}

func violationFields(err error) []string {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return nil
	}
	var out []string
	for _, v := range ve.Violations {
		out = append(out, v.Field)
	}
	return out
}

func TestParseKeyTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		fields  []string
		wantErr string
	}{
		{in: "{email}", fields: []string{"email"}},
		{in: "{org_id}:{slug}", fields: []string{"org_id", "slug"}},
		{in: "u:{id}:{id}", fields: []string{"id"}},
		{in: "{{{id}}}", fields: []string{"id"}},
		{in: "", wantErr: "empty template"},
		{in: "plain", wantErr: "no {field} placeholder"},
		{in: "{{id}}", wantErr: "no {field} placeholder"},
		{in: "{email", wantErr: "unclosed"},
		{in: "email}", wantErr: "unmatched '}'"},
		{in: "{}", wantErr: "not a field name"},
		{in: "{a-b}", wantErr: "not a field name"},
		{in: "{a}{b}", wantErr: "no separator"},
		{in: strings.Repeat("x", MaxTemplateLen) + "{a}", wantErr: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseKeyTemplate(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseKeyTemplate(%q) error = %v, want containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeyTemplate(%q): %v", tt.in, err)
			}
			if !slices.Equal(got.Fields(), tt.fields) {
				t.Errorf("Fields() = %v, want %v", got.Fields(), tt.fields)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestTemplateRender(t *testing.T) {
	t.Parallel()
	payload, err := DecodePayload([]byte(`{"org_id": 12345678901234567890, "slug": "Acme", "ok": true, "f": 1.5, "n": null, "o": {"a":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tmpl    string
		want    string
		wantErr error
	}{
		{tmpl: "{org_id}:{slug}", want: "12345678901234567890:Acme"},
		{tmpl: "{{{slug}}}", want: "{Acme}"},
		{tmpl: "{ok}/{f}", want: "true/1.5"},
		{tmpl: "{missing}", wantErr: ErrMissingField},
		{tmpl: "{n}", wantErr: ErrMissingField},
		{tmpl: "{o}", wantErr: ErrNotScalar},
	}
	for _, tt := range tests {
		tp, err := ParseKeyTemplate(tt.tmpl)
		if err != nil {
			t.Fatalf("parse %q: %v", tt.tmpl, err)
		}
		got, err := tp.Render(payload)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Render(%q) error = %v, want %v", tt.tmpl, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Render(%q) = %q, %v; want %q", tt.tmpl, got, err, tt.want)
		}
	}
}

func TestDefinitionValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Definition)
		want   []string // violating fields, in order
	}{
		{name: "valid", mutate: func(*Definition) {}},
		{name: "no filter", mutate: func(d *Definition) { d.Filter = nil }},
		{name: "empty name", mutate: func(d *Definition) { d.Name = "" }, want: []string{"name"}},
		{name: "name with colon", mutate: func(d *Definition) { d.Name = "a:b" }, want: []string{"name"}},
		{name: "name with brace", mutate: func(d *Definition) { d.Name = "a{b}" }, want: []string{"name"}},
		{name: "upper name", mutate: func(d *Definition) { d.Name = "Users" }, want: []string{"name"}},
		{name: "long name", mutate: func(d *Definition) { d.Name = strings.Repeat("a", 64) }, want: []string{"name"}},
		{name: "no model", mutate: func(d *Definition) { d.Model = "" }, want: []string{"model"}},
		{name: "model with a dot (no topic name)", mutate: func(d *Definition) { d.Model = "users.v2" }, want: []string{"model"}},
		{name: "bad template", mutate: func(d *Definition) { d.KeyTemplate = "{email" }, want: []string{"key_template"}},
		{name: "no fields", mutate: func(d *Definition) { d.Fields = nil }, want: []string{"fields"}},
		{name: "bad field", mutate: func(d *Definition) { d.Fields = []string{"id", "bad-field"} }, want: []string{"fields[1]"}},
		{name: "dup field", mutate: func(d *Definition) { d.Fields = []string{"id", "email", "id"} }, want: []string{"fields[2]"}},
		{name: "filter op", mutate: func(d *Definition) { d.Filter.Op = "like" }, want: []string{"filter.op"}},
		{name: "filter eq arity", mutate: func(d *Definition) { d.Filter.Values = []string{"a", "b"} }, want: []string{"filter.values"}},
		{name: "filter in empty", mutate: func(d *Definition) { d.Filter = &Filter{Field: "status", Op: OpIn} }, want: []string{"filter.values"}},
		{name: "filter field", mutate: func(d *Definition) { d.Filter.Field = "" }, want: []string{"filter.field"}},
		{name: "many", mutate: func(d *Definition) { d.Name = ""; d.KeyTemplate = ""; d.Filter.Op = "" }, want: []string{"name", "key_template", "filter.op"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := validDef()
			tt.mutate(&d)
			err := d.Validate()
			got := violationFields(err)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("violations = %v (%v), want %v", got, err, tt.want)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
		})
	}
}

func TestDefinitionValidateAgainst(t *testing.T) {
	t.Parallel()
	model := []string{"id", "email", "name", "status"}
	d := validDef()
	if err := d.ValidateAgainst(model); err != nil {
		t.Fatalf("valid definition: %v", err)
	}
	d.KeyTemplate = "{org_id}:{email}"
	d.Fields = []string{"id", "phone"}
	d.Filter.Field = "deleted"
	got := violationFields(d.ValidateAgainst(model))
	want := []string{"key_template", "fields[1]", "filter.field"}
	if !slices.Equal(got, want) {
		t.Fatalf("violations = %v, want %v", got, want)
	}
}

func TestFilterMatch(t *testing.T) {
	t.Parallel()
	payload, _ := DecodePayload([]byte(`{"status":"active","n":3,"b":false,"z":null,"o":[1]}`))
	tests := []struct {
		f    *Filter
		want bool
	}{
		{f: nil, want: true},
		{f: &Filter{Field: "status", Op: OpEq, Values: []string{"active"}}, want: true},
		{f: &Filter{Field: "status", Op: OpEq, Values: []string{"Active"}}, want: false},
		{f: &Filter{Field: "status", Op: OpIn, Values: []string{"x", "active"}}, want: true},
		{f: &Filter{Field: "status", Op: OpNotEq, Values: []string{"active"}}, want: false},
		{f: &Filter{Field: "status", Op: OpNotIn, Values: []string{"x"}}, want: true},
		{f: &Filter{Field: "n", Op: OpEq, Values: []string{"3"}}, want: true},
		{f: &Filter{Field: "b", Op: OpEq, Values: []string{"false"}}, want: true},
		{f: &Filter{Field: "z", Op: OpEq, Values: []string{"null"}}, want: true},
		{f: &Filter{Field: "o", Op: OpNotEq, Values: []string{"x"}}, want: false},
		{f: &Filter{Field: "missing", Op: OpNotEq, Values: []string{"x"}}, want: false},
	}
	for i, tt := range tests {
		if got := tt.f.Match(payload); got != tt.want {
			t.Errorf("case %d: %+v.Match = %v, want %v", i, tt.f, got, tt.want)
		}
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	p, err := Compile(validDef())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		raw      string
		key      string
		value    string
		keep     bool
		wantErr  bool
		errorsIs error
	}{
		{raw: `{"id":9007199254740993,"email":"A@X.io","name":"A","status":"active","secret":"s"}`, key: "a@x.io", value: `{"id":9007199254740993,"email":"A@X.io","name":"A"}`, keep: true},
		{raw: `{"id":1,"email":"b@x.io","status":"active"}`, key: "b@x.io", value: `{"id":1,"email":"b@x.io"}`, keep: true},
		{raw: `{"id":2,"email":"C@x.io","status":"banned"}`, key: "c@x.io", keep: false},
		{raw: `{"id":3,"status":"active"}`, wantErr: true, errorsIs: ErrMissingField},
		{raw: `[1,2]`, wantErr: true, errorsIs: ErrPayload},
		{raw: `null`, wantErr: true, errorsIs: ErrPayload},
		{raw: `{"email":"x"} {}`, wantErr: true, errorsIs: ErrPayload},
	}
	for _, tt := range tests {
		key, value, keep, err := p.Apply([]byte(tt.raw))
		if tt.wantErr {
			if !errors.Is(err, tt.errorsIs) {
				t.Errorf("Apply(%s) error = %v, want %v", tt.raw, err, tt.errorsIs)
			}
			continue
		}
		if err != nil || key != tt.key || string(value) != tt.value || keep != tt.keep {
			t.Errorf("Apply(%s) = %q, %s, %v, %v; want %q, %s, %v", tt.raw, key, value, keep, err, tt.key, tt.value, tt.keep)
		}
	}
}

func TestDefinitionJSONRoundTrip(t *testing.T) {
	t.Parallel()
	d := validDef()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"users_by_email","model":"users","key_template":"{email}","lowercase_key":true,"fields":["id","email","name"],"filter":{"field":"status","op":"eq","values":["active"]}}`
	if string(b) != want {
		t.Errorf("json = %s\nwant   %s", b, want)
	}
	var back Definition
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Equal(d) {
		t.Errorf("round trip = %+v, want %+v", back, d)
	}
}

// TestReadsIsEnough: Reads lists the key, filter and kept fields, and a
// payload reduced to them keys, filters and projects exactly as the whole.
func TestReadsIsEnough(t *testing.T) {
	t.Parallel()
	d := validDef()
	d.KeyTemplate = "{org}:{email}"
	p, err := Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"org", "email", "status", "id", "name"}
	if got := p.Reads(); !slices.Equal(got, want) {
		t.Fatalf("Reads() = %v, want %v", got, want)
	}
	for _, raw := range []string{
		`{"id":1,"org":"o","email":"A@x","name":"n","status":"active","bio":"b","extra":{"x":1}}`,
		`{"id":2,"org":"o","email":"b@x","status":"gone","bio":"b"}`,
		`{"id":3,"email":"c@x","status":"active"}`,
	} {
		full, err := DecodePayload([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		reduced := map[string]any{}
		for _, f := range p.Reads() {
			if v, ok := full[f]; ok {
				reduced[f] = v
			}
		}
		k1, e1 := p.Key(full)
		k2, e2 := p.Key(reduced)
		v1, _ := p.Project(full)
		v2, _ := p.Project(reduced)
		if k1 != k2 || (e1 == nil) != (e2 == nil) || p.Match(full) != p.Match(reduced) || string(v1) != string(v2) {
			t.Fatalf("%s: full gives %q %v %v %s, reduced %q %v %v %s", raw, k1, e1, p.Match(full), v1, k2, e2, p.Match(reduced), v2)
		}
	}
}

// TestApplyKeepsHTMLCharacters: '<', '>' and '&' are written as themselves, so a projected value
// is never larger than the fields it keeps (encoding/json's default would write each as six bytes).
func TestApplyKeepsHTMLCharacters(t *testing.T) {
	p, err := Compile(Definition{Name: "p", Model: "users", KeyTemplate: "{id}", Fields: []string{"id", "bio"}})
	if err != nil {
		t.Fatal(err)
	}
	_, value, keep, err := p.Apply([]byte(`{"id":1,"bio":"<b>Tom & Jerry</b>","other":"x"}`))
	if err != nil || !keep {
		t.Fatalf("Apply = keep %v, err %v", keep, err)
	}
	if want := `{"id":1,"bio":"<b>Tom & Jerry</b>"}`; string(value) != want {
		t.Fatalf("Apply value = %s, want %s", value, want)
	}
}

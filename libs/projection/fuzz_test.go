package projection

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseKeyTemplate: parsing never panics; an accepted template names at least one valid field,
// and rendering it with every field set renders each literal and value (no brace is lost).
func FuzzParseKeyTemplate(f *testing.F) {
	for _, s := range []string{"{email}", "{org_id}:{slug}", "{{{a}}}", "{a", "}", "{}", "{a}{b}", "x{a}y{b}z", "{{", "{é}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseKeyTemplate(s)
		if err != nil {
			return
		}
		if len(tp.Fields()) == 0 {
			t.Fatalf("accepted %q with no field", s)
		}
		payload := map[string]any{}
		for _, name := range tp.Fields() {
			if !validField(name) {
				t.Fatalf("accepted %q with invalid field %q", s, name)
			}
			payload[name] = "v"
		}
		key, err := tp.Render(payload)
		if err != nil {
			if strings.Contains(err.Error(), "longer than") {
				return
			}
			t.Fatalf("Render(%q) with every field: %v", s, err)
		}
		if !strings.Contains(key, "v") {
			t.Fatalf("Render(%q) = %q lost the field values", s, key)
		}
		delete(payload, tp.Fields()[0])
		if _, err := tp.Render(payload); !errors.Is(err, ErrMissingField) {
			t.Fatalf("Render(%q) without %q: error %v, want ErrMissingField", s, tp.Fields()[0], err)
		}
	})
}

// FuzzDefinition: decoding and validating any JSON never panics; a definition that validates
// compiles, and a valid definition keeps validating after a JSON round trip.
func FuzzDefinition(f *testing.F) {
	f.Add([]byte(`{"name":"users_by_email","model":"users","key_template":"{email}","lowercase_key":true,"fields":["id","email"],"filter":{"field":"status","op":"in","values":["a","b"]}}`))
	f.Add([]byte(`{"name":"x","model":"m","key_template":"{a}:{b}","fields":["a"]}`))
	f.Add([]byte(`{"name":"","fields":[""],"filter":{}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var d Definition
		if json.Unmarshal(raw, &d) != nil {
			return
		}
		err := d.Validate()
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Violations) == 0 {
				t.Fatalf("Validate error %v is not a non-empty *ValidationError", err)
			}
			for _, v := range ve.Violations {
				if v.Field == "" || v.Description == "" {
					t.Fatalf("violation without field or description: %+v", v)
				}
			}
			return
		}
		if _, err := Compile(d); err != nil {
			t.Fatalf("valid definition does not compile: %v", err)
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var back Definition
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if err := back.Validate(); err != nil || !back.Equal(d) {
			t.Fatalf("round trip changed a valid definition: %v", err)
		}
	})
}

// FuzzFilterApply: applying a valid filter and projection to any payload never panics; a kept
// record's value is a JSON object holding only the definition's fields; eq and not_eq disagree
// on every record that has the field as a scalar.
func FuzzFilterApply(f *testing.F) {
	f.Add("active", []byte(`{"id":1,"email":"a@b","status":"active"}`))
	f.Add("3", []byte(`{"id":1,"email":"a@b","status":3}`))
	f.Add("x", []byte(`{"id":1,"email":{"a":1},"status":[1]}`))
	f.Add("", []byte(`not json`))
	f.Fuzz(func(t *testing.T, value string, raw []byte) {
		base := Definition{Name: "p", Model: "m", KeyTemplate: "{email}", Fields: []string{"id", "email"}}
		eq, ne := base, base
		eq.Filter = &Filter{Field: "status", Op: OpEq, Values: []string{value}}
		ne.Filter = &Filter{Field: "status", Op: OpNotEq, Values: []string{value}}
		peq, err := Compile(eq)
		if err != nil {
			if len(value) > MaxFilterValue {
				return
			}
			t.Fatal(err)
		}
		pne, err := Compile(ne)
		if err != nil {
			t.Fatal(err)
		}
		_, v, keep, err := peq.Apply(raw)
		if err != nil {
			return
		}
		if keep {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(v, &m); err != nil {
				t.Fatalf("projected value %q is not a JSON object: %v", v, err)
			}
			for k := range m {
				if k != "id" && k != "email" {
					t.Fatalf("projected value keeps field %q", k)
				}
			}
		}
		payload, _ := DecodePayload(raw)
		if sv, present := payload["status"]; present {
			if _, ok := scalarText(sv); ok && peq.Match(payload) == pne.Match(payload) {
				t.Fatalf("eq and not_eq agree (%v) on %s", peq.Match(payload), raw)
			}
		}
	})
}

// FuzzAppendJSON checks Project's fast encoder against encoding/json without
// HTML escaping, byte for byte, for the scalar shapes a decoded payload holds,
// and that the result decodes back to the same value.
func FuzzAppendJSON(f *testing.F) {
	for _, s := range []string{"plain", "quo\"te", "<html>&", "tab\t", "é", "\xff", "", "1e5", "-0.5", "01", "1.", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, v := range []any{s, json.Number(s), s == "", nil} {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			werr := enc.Encode(v)
			want := strings.TrimSuffix(buf.String(), "\n")
			got, gerr := appendJSON([]byte("x"), v)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("appendJSON(%#v) error %v; encoding/json error %v", v, gerr, werr)
			}
			if werr != nil {
				continue
			}
			if string(got) != "x"+want {
				t.Fatalf("appendJSON(%#v) = %q; encoding/json (no HTML escaping) gives %q", v, got[1:], want)
			}
			if strings.ContainsAny(s, "<>&") && strings.Contains(string(got), `\u00`) && utf8.ValidString(s) && !hasControl(s) {
				t.Fatalf("appendJSON(%#v) = %q escapes HTML characters", v, got[1:])
			}
		}
	})
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x2028 || r == 0x2029 }) >= 0
}

// FuzzMembersMatchMap: for any payload, Key, Match and Project give the same
// result (and the same error) whether the payload is the map DecodePayload
// returns or the same members as Members, in any order, through ValueOf.
func FuzzMembersMatchMap(f *testing.F) {
	for _, s := range []string{
		`{"email":"Ada@X.io","id":7,"name":"Ada","status":"active"}`,
		`{"email":null,"id":1.5e3,"status":"gone","name":"<b>&"}`,
		`{"email":true,"id":{"x":1},"name":[1,"a"],"status":null}`,
		`{"email":"é\u2028","id":-0,"name":"\"q\"","status":"active","org":"o"}`,
	} {
		f.Add([]byte(s))
	}
	defs := []Definition{
		{Name: "a", Model: "m", KeyTemplate: "{email}", LowercaseKey: true, Fields: []string{"id", "name", "email"},
			Filter: &Filter{Field: "status", Op: OpIn, Values: []string{"active", "null", "true"}}},
		{Name: "b", Model: "m", KeyTemplate: "user:{id}:{status}", Fields: []string{"status", "org", "id"},
			Filter: &Filter{Field: "name", Op: OpNotEq, Values: []string{"Ada"}}},
	}
	var ps []*Projection
	for _, d := range defs {
		p, err := Compile(d)
		if err != nil {
			f.Fatal(err)
		}
		ps = append(ps, p)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := DecodePayload(raw)
		if err != nil {
			return
		}
		var ms Members
		for k, v := range m {
			ms = append(ms, Member{Name: k, Value: ValueOf(v)})
		}
		for _, p := range ps {
			k1, e1 := p.Key(m)
			k2, e2 := p.KeyMembers(ms)
			if k1 != k2 || errText(e1) != errText(e2) {
				t.Fatalf("%s Key: map %q %v, members %q %v", raw, k1, e1, k2, e2)
			}
			if p.Match(m) != p.MatchMembers(ms) {
				t.Fatalf("%s Match: map %v, members %v", raw, p.Match(m), p.MatchMembers(ms))
			}
			v1, e1 := p.Project(m)
			v2, e2 := p.ProjectMembers(ms)
			if string(v1) != string(v2) || errText(e1) != errText(e2) {
				t.Fatalf("%s Project: map %s %v, members %s %v", raw, v1, e1, v2, e2)
			}
		}
		if got := ms.Map(); !jsonEqual(got, m) {
			t.Fatalf("%s: Members.Map() = %#v, want %#v", raw, got, m)
		}
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func jsonEqual(a, b map[string]any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

package projection

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzKeyTemplateRoundTrip: the key template parser (definitions come from API callers) reads
// any text without panicking, and what it accepts it understood exactly: writing its parts back
// (literal braces doubled, placeholders as {field}) gives the source text byte for byte; two
// placeholders never touch; every literal part is non-empty; rendering a payload that gives each
// field a distinct value yields the literals and those values in order. A refusal names an
// offset inside the text or says what is missing.
func FuzzKeyTemplateRoundTrip(f *testing.F) {
	for _, s := range []string{"{email}", "{org_id}:{slug}", "user:{id}", "{{{a}}}", "}}{a}{{", "{a}{b}", "{a", "a}", "{}", "{a b}", "x{é}", "{{}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseKeyTemplate(s)
		if err != nil {
			msg := err.Error()
			if i := strings.LastIndex(msg, "at offset "); i >= 0 { // Last: a field name may hold the words
				n, convErr := strconv.Atoi(strings.Fields(msg[i+len("at offset "):])[0])
				if convErr != nil || n < 0 || n >= len(s) {
					t.Fatalf("ParseKeyTemplate(%q): %q names an offset outside the text", s, msg)
				}
			}
			return
		}
		var back strings.Builder
		payload := map[string]any{}
		var want strings.Builder
		for i, p := range tp.parts {
			if p.field == "" {
				if p.literal == "" {
					t.Fatalf("ParseKeyTemplate(%q): empty literal part %d", s, i)
				}
				back.WriteString(strings.NewReplacer("{", "{{", "}", "}}").Replace(p.literal))
				want.WriteString(p.literal)
				continue
			}
			if i > 0 && tp.parts[i-1].field != "" {
				t.Fatalf("ParseKeyTemplate(%q): placeholders {%s} and {%s} touch", s, tp.parts[i-1].field, p.field)
			}
			back.WriteString("{" + p.field + "}")
			v, ok := payload[p.field]
			if !ok {
				v = "<" + strconv.Itoa(len(payload)) + ">"
				payload[p.field] = v
			}
			want.WriteString(v.(string))
		}
		if back.String() != s || tp.String() != s {
			t.Fatalf("ParseKeyTemplate(%q) parts write back as %q", s, back.String())
		}
		got, err := tp.Render(payload)
		if want.Len() > MaxKeyLen {
			return
		}
		if err != nil || got != want.String() {
			t.Fatalf("Render(%q) = %q, %v; want %q", s, got, err, want.String())
		}
	})
}

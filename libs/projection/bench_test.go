package projection

import (
	"encoding/json"
	"strings"
	"testing"
)

var benchPayload = []byte(`{"id":9007199254740993,"email":"Ada.Lovelace@Example.com","name":"Ada Lovelace","status":"active",` +
	`"org_id":42,"created_at":"2026-11-27T19:00:00Z","bio":"` + strings.Repeat("x", 200) + `","tags":["a","b"]}`)

// BenchmarkApply is the cache-producer's per-record cost: decode, key, filter, project.
func BenchmarkApply(b *testing.B) {
	p, err := Compile(Definition{Name: "p", Model: "users", KeyTemplate: "{email}", LowercaseKey: true,
		Fields: []string{"id", "email", "name"}, Filter: &Filter{Field: "status", Op: OpEq, Values: []string{"active"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, keep, err := p.Apply(benchPayload); err != nil || !keep {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyNaive is the peer: the obvious encoding/json code (unmarshal into a map, build a
// map of the kept fields, marshal it), which also loses the precision of large integer ids.
func BenchmarkApplyNaive(b *testing.B) {
	fields := []string{"id", "email", "name"}
	b.ReportAllocs()
	for b.Loop() {
		var m map[string]any
		if err := json.Unmarshal(benchPayload, &m); err != nil {
			b.Fatal(err)
		}
		if m["status"] != "active" {
			b.Fatal("filtered")
		}
		key := strings.ToLower(m["email"].(string))
		out := make(map[string]any, len(fields))
		for _, f := range fields {
			out[f] = m[f]
		}
		v, err := json.Marshal(out)
		if err != nil || key == "" || len(v) == 0 {
			b.Fatal(err)
		}
	}
}

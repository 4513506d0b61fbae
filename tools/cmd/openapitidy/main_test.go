package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestTidy(t *testing.T) {
	t.Parallel()
	in := `{"b": 1, "a": {"items": {"type": "object", "$ref": "#/definitions/x"}, "n": [1.5, true, null, "s\"q"]}, "e": {}, "l": []}`
	out, err := tidy([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"b": 1, "a": {"items": {"$ref": "#/definitions/x"}, "n": [1.5, true, null, "s\"q"]}, "e": {}, "l": []}`
	var got, w any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	_ = json.Unmarshal([]byte(want), &w)
	if !reflect.DeepEqual(got, w) {
		t.Errorf("tidy:\n got %s\nwant %s", out, want)
	}
	if string(out[:8]) != "{\n  \"b\":" {
		t.Errorf("keys out of order or not indented: %s", out)
	}
	if _, err := tidy([]byte(`{"a": `)); err == nil {
		t.Error("a truncated document was accepted")
	}
}

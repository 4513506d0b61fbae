// Command openapitidy removes the keys protoc-gen-openapiv2 writes beside a "$ref" (such as
// "type": "object" on the items of a repeated message field). OpenAPI 2.0 ignores a $ref's
// siblings, so removing them changes nothing a reader may rely on, and linters (Redocly's
// spec-ref-siblings) flag them. It rewrites the file in place, indented as the generator does.
//
//	openapitidy FILE.swagger.json
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "openapitidy:", err)
		os.Exit(1)
	}
}

func run(args []string, _ io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: openapitidy FILE.swagger.json")
	}
	in, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	out, err := tidy(in)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	return os.WriteFile(args[0], out, 0o644)
}

// tidy returns doc with every object that holds "$ref" reduced to its "$ref", keys kept in
// their order.
func tidy(doc []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	v, err := decode(dec)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	encode(&b, v, "")
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// object is a JSON object with its keys in document order.
type object struct {
	keys []string
	vals map[string]any
}

func decode(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := &object{vals: map[string]any{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k := kt.(string)
				v, err := decode(dec)
				if err != nil {
					return nil, err
				}
				o.keys = append(o.keys, k)
				o.vals[k] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			if ref, ok := o.vals["$ref"]; ok {
				return &object{keys: []string{"$ref"}, vals: map[string]any{"$ref": ref}}, nil
			}
			return o, nil
		case '[':
			var a []any
			for dec.More() {
				v, err := decode(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			if a == nil {
				a = []any{}
			}
			return a, nil
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return tok, nil
	}
}

func encode(b *bytes.Buffer, v any, indent string) {
	switch x := v.(type) {
	case *object:
		if len(x.keys) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteString("{\n")
		for i, k := range x.keys {
			b.WriteString(indent + "  ")
			writeString(b, k)
			b.WriteString(": ")
			encode(b, x.vals[k], indent+"  ")
			if i < len(x.keys)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "}")
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[\n")
		for i, e := range x {
			b.WriteString(indent + "  ")
			encode(b, e, indent+"  ")
			if i < len(x)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "]")
	case string:
		writeString(b, x)
	case json.Number:
		b.WriteString(x.String())
	case bool:
		fmt.Fprint(b, x)
	case nil:
		b.WriteString("null")
	}
}

func writeString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

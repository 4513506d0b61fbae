package feed

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/distcache/distcache/libs/projection"
)

// Fields is the set of payload fields a decode keeps: the fields the
// projections it feeds read (FieldsOf). nil keeps every field.
type Fields map[string]struct{}

// FieldsOf is the union of the payload fields the projections read
// (projection.Projection.Reads); a payload reduced to them projects into
// each of them exactly as the whole payload does.
func FieldsOf(ps ...*projection.Projection) Fields {
	f := Fields{}
	for _, p := range ps {
		for _, name := range p.Reads() {
			f[name] = struct{}{}
		}
	}
	return f
}

// decodePayload is projection.DecodePayload for the hot path, decoding into
// projection.Members (no map, no interface box per value) and keeping only
// the fields in keep (all when nil). A JSON object is split into its
// members without reflection: the payload is copied into one string once,
// and keys, strings without escapes and numbers are slices of it; members
// not kept are checked and skipped without being built; nested objects and
// arrays, escaped or non-UTF-8 strings and anything unexpected go through
// encoding/json, so the result is DecodePayload's map less the members not
// kept (TestDecodePayloadMatches and FuzzDecodePayload check it). fastObject accepts only valid JSON (its grammar is strict, and what
// it hands to encoding/json is checked there), which is what lets Decode
// skip events.FromRecord's separate JSON check (FuzzDecodePayload checks
// that the two agree on validity).
func decodePayload(b []byte, keep Fields) (projection.Members, error) {
	ms, ok := fastObject(b, keep)
	if ok {
		return ms, nil
	}
	m, err := projection.DecodePayload(b)
	if err != nil {
		return nil, err
	}
	ms = make(projection.Members, 0, len(m))
	for k, v := range m {
		if _, kept := keep[k]; kept || keep == nil {
			ms = append(ms, projection.Member{Name: k, Value: projection.ValueOf(v)})
		}
	}
	return ms, nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func fastObject(b []byte, keep Fields) (projection.Members, bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	src := string(b) // every key and plain value is a slice of this one copy
	n := len(keep)
	if keep == nil {
		n = 8
	}
	ms := make(projection.Members, 0, n)
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return ms, skipWS(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		key, j, ok := fastString(b, src, i)
		if !ok {
			return nil, false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipWS(b, i+1)
		if _, kept := keep[key]; kept || keep == nil {
			v, j, ok := fastValue(b, src, i)
			if !ok {
				return nil, false
			}
			ms = append(ms, projection.Member{Name: key, Value: v})
			i = j
		} else {
			j, ok := skipValue(b, i)
			if !ok {
				return nil, false
			}
			i = j
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return ms, skipWS(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

// fastString reads the string starting at b[i] == '"'; src is string(b).
func fastString(b []byte, src string, i int) (string, int, bool) {
	j := i + 1
	for j < len(b) {
		switch c := b[j]; {
		case c == '"':
			if !utf8.Valid(b[i+1 : j]) {
				return slowString(b, i)
			}
			return src[i+1 : j], j + 1, true
		case c == '\\':
			return slowString(b, i)
		case c < 0x20:
			return "", 0, false
		}
		j++
	}
	return "", 0, false
}

func slowString(b []byte, i int) (string, int, bool) {
	j := i + 1
	for j < len(b) {
		switch b[j] {
		case '\\':
			j += 2
			continue
		case '"':
			var s string
			if err := json.Unmarshal(b[i:j+1], &s); err != nil {
				return "", 0, false
			}
			return s, j + 1, true
		}
		j++
	}
	return "", 0, false
}

func fastValue(b []byte, src string, i int) (projection.Value, int, bool) {
	if i >= len(b) {
		return projection.Value{}, 0, false
	}
	switch c := b[i]; {
	case c == '"':
		s, j, ok := fastString(b, src, i)
		return projection.Value{Kind: projection.KindString, Text: s}, j, ok
	case c == 't':
		if bytes.HasPrefix(b[i:], []byte("true")) {
			return projection.Value{Kind: projection.KindBool, Text: "true"}, i + 4, true
		}
	case c == 'f':
		if bytes.HasPrefix(b[i:], []byte("false")) {
			return projection.Value{Kind: projection.KindBool, Text: "false"}, i + 5, true
		}
	case c == 'n':
		if bytes.HasPrefix(b[i:], []byte("null")) {
			return projection.Value{Kind: projection.KindNull}, i + 4, true
		}
	case c == '-' || (c >= '0' && c <= '9'):
		j, ok := scanNumber(b, i)
		if !ok {
			return projection.Value{}, 0, false
		}
		return projection.Value{Kind: projection.KindNumber, Text: src[i:j]}, j, true
	case c == '{' || c == '[':
		end, ok := matchEnd(b, i)
		if !ok {
			return projection.Value{}, 0, false
		}
		dec := json.NewDecoder(bytes.NewReader(b[i:end]))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return projection.Value{}, 0, false
		}
		return projection.Value{Kind: projection.KindOther, Any: v}, end, true
	}
	return projection.Value{}, 0, false
}

// skipValue checks the JSON value starting at b[i] as strictly as
// fastValue and returns the index after it, building nothing.
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == 't' && bytes.HasPrefix(b[i:], []byte("true")):
		return i + 4, true
	case c == 'f' && bytes.HasPrefix(b[i:], []byte("false")):
		return i + 5, true
	case c == 'n' && bytes.HasPrefix(b[i:], []byte("null")):
		return i + 4, true
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(b, i)
	case c == '{' || c == '[':
		end, ok := matchEnd(b, i)
		return end, ok && json.Valid(b[i:end])
	}
	return 0, false
}

// skipString checks the string starting at b[i] == '"' (its escapes, no
// control characters; like encoding/json, bytes that are not UTF-8 are
// accepted) and returns the index after it.
func skipString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			j++
			if j >= len(b) {
				return 0, false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(b) {
					return 0, false
				}
				for _, h := range b[j+1 : j+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return 0, false
					}
				}
				j += 4
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

// scanNumber scans the JSON number starting at b[i] exactly as the JSON
// grammar has it (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?) and returns
// the index after it. Leading zeros, "1.", ".5", "+1" and the like are
// refused, so that a payload fastObject accepts is valid JSON.
func scanNumber(b []byte, i int) (int, bool) {
	digits := func(j int) int {
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j
	}
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		j = digits(j + 1)
	default:
		return 0, false
	}
	if j < len(b) && b[j] == '.' {
		k := digits(j + 1)
		if k == j+1 {
			return 0, false
		}
		j = k
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		k := digits(j)
		if k == j {
			return 0, false
		}
		j = k
	}
	return j, true
}

// matchEnd returns the index after the object or array starting at b[i].
func matchEnd(b []byte, i int) (int, bool) {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			j++
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, true
			}
		}
	}
	return 0, false
}

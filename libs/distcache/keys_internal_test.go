package distcache

import (
	"errors"
	"testing"
)

func TestKeys(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"value", ValueKey("users_by_email", 3, "ada@example.com"), "dc:users_by_email:g3:ada@example.com"},
		{"stream", StreamKey("users_by_email", 3), "dc:{users_by_email}:g3:changes"},
		{"pointer", PointerKey("users_by_email"), "dc:{users_by_email}:current"},
		{"control", ControlKey("users_by_email"), "dc:{users_by_email}:control"},
		{"pattern", GenerationPattern("users_by_email", 3), "dc:users_by_email:g3:*"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestValidateProjection(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"users_by_email", true}, {"Orgs.v2-x", true}, {"", false}, {"a:b", false},
		{"a{b}", false}, {"a b", false}, {"a*", false}, {string(make([]byte, 129)), false},
	}
	for _, tt := range tests {
		err := ValidateProjection(tt.name)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidProjection)) {
			t.Errorf("ValidateProjection(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestValueEncoding(t *testing.T) {
	for _, v := range []int64{1, 42, 1 << 40, 1<<63 - 1} {
		s := versionHex(v) + "s" + "payload"
		got, op, payload, err := decodeValue(s)
		if err != nil || got != v || op != opSet || payload != "payload" {
			t.Errorf("decodeValue(%q) = %d %c %q %v", s, got, op, payload, err)
		}
	}
	for _, bad := range []string{"", "0000000000000001", "000000000000000Gs", "0000000000000001x", "ffffffffffffffffs"} {
		if _, _, _, err := decodeValue(bad); err == nil {
			t.Errorf("decodeValue(%q) succeeded", bad)
		}
	}
	if a, b := versionHex(9), versionHex(10); a >= b {
		t.Errorf("versionHex does not sort: %q >= %q", a, b)
	}
}

func TestFIFO(t *testing.T) {
	var f fifo
	for i := range 5000 {
		f.push(uint64(i), uint32(i))
	}
	for i := range 4990 {
		h, tm, ok := f.peek()
		if !ok || h != uint64(i) || tm != uint32(i) {
			t.Fatalf("peek #%d = %d %d %v", i, h, tm, ok)
		}
		f.pop()
	}
	if f.n != 10 || len(f.hashes) > 1024 {
		t.Fatalf("after pops: n=%d cap=%d; want 10 and a shrunk ring", f.n, len(f.hashes))
	}
	h, _, _ := f.peek()
	if h != 4990 {
		t.Fatalf("head after shrink = %d, want 4990", h)
	}
}

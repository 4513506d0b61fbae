package gctune

import "testing"

func TestParseLimit(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"536870912\n": 536870912, "max\n": 0, "9223372036854771712\n": 0, "": 0, "-1": 0, "junk": 0,
	} {
		if got := parseLimit(in); got != want {
			t.Errorf("parseLimit(%q) = %d, want %d", in, got, want)
		}
	}
}

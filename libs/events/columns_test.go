package events

import (
	"slices"
	"testing"
)

func TestParseColumnSpec(t *testing.T) {
	t.Parallel()
	table := []string{"id", "email", "password_hash", "api_key"}
	for _, tc := range []struct {
		spec string
		ok   bool
		want []string
	}{
		{"", true, table},
		{"except:password_hash|api_key", true, []string{"id", "email"}},
		{"only:email|id", true, []string{"id", "email"}},
		{"only:nope", true, []string{}},
		{"only:", false, nil},
		{"except:a||b", false, nil},
		{"hide:password_hash", false, nil},
		{"password_hash", false, nil},
	} {
		c, err := ParseColumnSpec(tc.spec)
		if (err == nil) != tc.ok {
			t.Errorf("ParseColumnSpec(%q) = %v, want ok=%v", tc.spec, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if got := c.Published(table); !slices.Equal(got, tc.want) {
			t.Errorf("%q.Published(%v) = %v, want %v", tc.spec, table, got, tc.want)
		}
		if c.String() != tc.spec {
			t.Errorf("ParseColumnSpec(%q).String() = %q", tc.spec, c.String())
		}
	}
}

package events

import (
	"fmt"
	"slices"
	"strings"
)

// ColumnSpec is a model's published columns: the capture trigger's optional third argument
// (distcache_capture('users', 'id', 'except:password_hash|api_key')) and the column part of a
// core-publisher PUBLISHER_MODELS entry. "only:a|b" publishes the listed columns only (an
// allow-list), "except:a|b" every column but those (a deny-list); the empty spec publishes every
// column. The database applies it with distcache_published_image (migrations/000005), the same
// rules as here.
type ColumnSpec struct {
	// Only is true for an allow-list, false for a deny-list.
	Only bool
	// Columns are the listed column names; none for the empty spec.
	Columns []string
}

// ParseColumnSpec parses a published-columns spec.
func ParseColumnSpec(s string) (ColumnSpec, error) {
	if s == "" {
		return ColumnSpec{}, nil
	}
	kind, list, ok := strings.Cut(s, ":")
	cols := strings.Split(list, "|")
	if !ok || (kind != "only" && kind != "except") || slices.Contains(cols, "") {
		return ColumnSpec{}, fmt.Errorf("column spec %q: want only:<column>[|<column>] or except:<column>[|<column>]", s)
	}
	return ColumnSpec{Only: kind == "only", Columns: cols}, nil
}

// Published returns the columns of cols (a table's, in order) that the spec publishes.
func (c ColumnSpec) Published(cols []string) []string {
	if len(c.Columns) == 0 {
		return slices.Clone(cols)
	}
	out := make([]string, 0, len(cols))
	for _, col := range cols {
		if slices.Contains(c.Columns, col) == c.Only {
			out = append(out, col)
		}
	}
	return out
}

// String returns the spec in its text form.
func (c ColumnSpec) String() string {
	if len(c.Columns) == 0 {
		return ""
	}
	kind := "except:"
	if c.Only {
		kind = "only:"
	}
	return kind + strings.Join(c.Columns, "|")
}

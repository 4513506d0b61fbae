// Package modelcatalog tells the control-plane which fields a source model's payloads carry, so
// that a projection definition naming a field the model lacks is refused at the API instead of
// failing every record in the cache-producer.
//
// Two sources, tried in order (Chain):
//   - Static: fields listed in configuration (CONTROLPLANE_MODELS="users=id,email,status;orgs=id,slug").
//   - Columns: the columns the model's capture trigger publishes: those of the table its
//     distcache_capture() trigger is attached to, limited by the trigger's published-columns
//     spec (a payload is the row's to_jsonb through that spec, so its fields are exactly those);
//     without a trigger, the columns of the table of the same name.
package modelcatalog

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/events"
)

// ErrUnknownModel is returned for a model no source knows.
var ErrUnknownModel = errors.New("unknown model")

// Catalog returns the fields of a model, or an error wrapping ErrUnknownModel.
type Catalog interface {
	Fields(ctx context.Context, model string) ([]string, error)
}

// Static is a fixed model → fields map.
type Static map[string][]string

var (
	fieldRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ParseStatic parses "model=field,field;model=field" (whitespace around names is ignored).
func ParseStatic(s string) (Static, error) {
	out := Static{}
	for _, entry := range strings.Split(s, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		model, list, ok := strings.Cut(entry, "=")
		model = strings.TrimSpace(model)
		if !ok || events.ValidateAggregateName(model) != nil {
			return nil, fmt.Errorf("%q is not model=field[,field]", entry)
		}
		if _, dup := out[model]; dup {
			return nil, fmt.Errorf("model %q listed twice", model)
		}
		var fields []string
		for _, f := range strings.Split(list, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if !fieldRe.MatchString(f) {
				return nil, fmt.Errorf("model %q: %q is not a field name", model, f)
			}
			fields = append(fields, f)
		}
		if len(fields) == 0 {
			return nil, fmt.Errorf("model %q has no fields", model)
		}
		out[model] = fields
	}
	return out, nil
}

// Names returns the models, sorted.
func (s Static) Names() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Fields implements Catalog.
func (s Static) Fields(_ context.Context, model string) ([]string, error) {
	f, ok := s[model]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownModel, model)
	}
	return slices.Clone(f), nil
}

// Columns reads a model's fields from the core database: the columns its capture trigger
// publishes. The table is the one whose distcache_capture trigger names the model (pg_trigger),
// and its columns are limited by the trigger's published-columns spec (events.ColumnSpec), so a
// projection can only name columns that leave the core database. A model without a trigger falls
// back to the table of the same name (information_schema.columns, in the schemas of the
// connection's search_path), every column published.
type Columns struct {
	Pool *pgxpool.Pool
}

// captureTriggersSQL lists the tables distcache_capture is attached to, with the trigger
// arguments (aggregate, key column[, column spec]) NUL-separated.
const captureTriggersSQL = `SELECT t.tgrelid::regclass::text, t.tgargs
FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
WHERE p.proname = 'distcache_capture' AND NOT t.tgisinternal AND t.tgnargs IN (2, 3)`

// Fields implements Catalog.
func (c Columns) Fields(ctx context.Context, model string) ([]string, error) {
	table, spec, found, err := c.trigger(ctx, model)
	if err != nil {
		return nil, err
	}
	var out []string
	if found {
		out, err = c.columns(ctx, model, `SELECT attname FROM pg_attribute
			WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, table)
		out = spec.Published(out)
	} else {
		out, err = c.columns(ctx, model, `SELECT column_name FROM information_schema.columns
			WHERE table_name = $1 AND table_schema = ANY (current_schemas(false))
			ORDER BY ordinal_position`, model)
	}
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w %q (no such table in the core database)", ErrUnknownModel, model)
	}
	return out, nil
}

// trigger finds the capture trigger that names model: its table and column spec.
func (c Columns) trigger(ctx context.Context, model string) (table string, spec events.ColumnSpec, found bool, err error) {
	rows, err := c.Pool.Query(ctx, captureTriggersSQL)
	if err != nil {
		return "", spec, false, fmt.Errorf("capture triggers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tbl string
		var args []byte
		if err := rows.Scan(&tbl, &args); err != nil {
			return "", spec, false, fmt.Errorf("capture triggers: %w", err)
		}
		parts := strings.Split(strings.TrimSuffix(string(args), "\x00"), "\x00")
		if len(parts) < 2 || parts[0] != model {
			continue
		}
		if len(parts) == 3 {
			if spec, err = events.ParseColumnSpec(parts[2]); err != nil {
				return "", spec, false, fmt.Errorf("capture trigger of %q on %s: %w", model, tbl, err)
			}
		}
		table, found = tbl, true
	}
	if err := rows.Err(); err != nil {
		return "", spec, false, fmt.Errorf("capture triggers: %w", err)
	}
	return table, spec, found, nil
}

func (c Columns) columns(ctx context.Context, model, query string, arg any) ([]string, error) {
	rows, err := c.Pool.Query(ctx, query, arg)
	if err != nil {
		return nil, fmt.Errorf("columns of %q: %w", model, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("columns of %q: %w", model, err)
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("columns of %q: %w", model, err)
	}
	return out, nil
}

// Chain asks each catalog in turn; the first that knows the model answers.
type Chain []Catalog

// Fields implements Catalog.
func (c Chain) Fields(ctx context.Context, model string) ([]string, error) {
	for _, cat := range c {
		f, err := cat.Fields(ctx, model)
		if errors.Is(err, ErrUnknownModel) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownModel, model)
}

var (
	_ Catalog = Static(nil)
	_ Catalog = Columns{}
	_ Catalog = Chain(nil)
)

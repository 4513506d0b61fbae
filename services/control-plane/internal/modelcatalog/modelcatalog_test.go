package modelcatalog_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/control-plane/internal/modelcatalog"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

func TestParseStatic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    map[string][]string
		wantErr bool
	}{
		{in: "users=id,email ; orgs = id, slug", want: map[string][]string{"users": {"id", "email"}, "orgs": {"id", "slug"}}},
		{in: "users=id,", want: map[string][]string{"users": {"id"}}},
		{in: "users", wantErr: true},
		{in: "users=", wantErr: true},
		{in: "Users=id", want: map[string][]string{"Users": {"id"}}}, // the aggregate rule of libs/events: letters of either case
		{in: "users.v2=id", wantErr: true},                           // a dot would make the topic name ambiguous
		{in: "users=id;users=email", wantErr: true},
		{in: "users=e-mail", wantErr: true},
	}
	for _, tt := range tests {
		got, err := modelcatalog.ParseStatic(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseStatic(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || len(got) != len(tt.want) {
			t.Fatalf("ParseStatic(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		for m, f := range tt.want {
			if !slices.Equal(got[m], f) {
				t.Errorf("ParseStatic(%q)[%s] = %v, want %v", tt.in, m, got[m], f)
			}
		}
	}
}

// TestColumnsAndChain reads a model's fields from a real core database's table columns, and
// checks that static configuration takes precedence.
func TestColumnsAndChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, devstacktest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE users (id bigint PRIMARY KEY, email text, status text, org_id bigint)`); err != nil {
		t.Fatal(err)
	}
	cols := modelcatalog.Columns{Pool: pool}
	got, err := cols.Fields(ctx, "users")
	if err != nil || !slices.Equal(got, []string{"id", "email", "status", "org_id"}) {
		t.Fatalf("Columns.Fields(users) = %v, %v", got, err)
	}
	if _, err := cols.Fields(ctx, "invoices"); !errors.Is(err, modelcatalog.ErrUnknownModel) {
		t.Errorf("Columns.Fields(invoices) error = %v, want ErrUnknownModel", err)
	}
	chain := modelcatalog.Chain{modelcatalog.Static{"orgs": {"id", "slug"}, "users": {"id"}}, cols}
	if got, _ := chain.Fields(ctx, "users"); !slices.Equal(got, []string{"id"}) {
		t.Errorf("chain users = %v, want the static list first", got)
	}
	if got, _ := chain.Fields(ctx, "orgs"); !slices.Equal(got, []string{"id", "slug"}) {
		t.Errorf("chain orgs = %v", got)
	}
	if _, err := chain.Fields(ctx, "nope"); !errors.Is(err, modelcatalog.ErrUnknownModel) {
		t.Errorf("chain nope error = %v, want ErrUnknownModel", err)
	}
}

// TestColumnsPublishedByTrigger: a model's fields are the columns its capture trigger publishes:
// an 'except:' spec hides password_hash, an 'only:' spec keeps the listed columns, and the table
// is found by the trigger's model name even when the table is named otherwise.
func TestColumnsPublishedByTrigger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := devstacktest.Database(t)
	if err := migrations.Up(ctx, dbURL, migrations.Core); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, sql := range []string{
		`CREATE TABLE accounts (id bigint PRIMARY KEY, email text, password_hash text)`,
		`CREATE TRIGGER accounts_distcache AFTER INSERT OR UPDATE OR DELETE ON accounts
			FOR EACH ROW EXECUTE FUNCTION distcache_capture('accounts', 'id', 'except:password_hash')`,
		`CREATE TABLE members (id bigint PRIMARY KEY, name text, ssn text, email text)`,
		// Statement-level capture (three triggers, the same arguments).
		`SELECT distcache_attach('members', 'people', 'id', 'only:id|name')`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	cols := modelcatalog.Columns{Pool: pool}
	for model, want := range map[string][]string{"accounts": {"id", "email"}, "people": {"id", "name"}} {
		got, err := cols.Fields(ctx, model)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Columns.Fields(%s) = %v, %v; want %v (the published columns only)", model, got, err, want)
		}
	}
}

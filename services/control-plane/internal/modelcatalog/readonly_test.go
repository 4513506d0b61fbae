package modelcatalog_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/control-plane/internal/modelcatalog"
	"github.com/distcache/distcache/tools/devstacktest"
)

// readOnlyRoleSQL is the role docs/deploy.md tells operators to create for the control-plane's
// CONTROLPLANE_CORE_DATABASE_URL ({role}, {password} and {database} filled in), and the grant for
// a model without a capture trigger.
const (
	readOnlyRoleSQL = `CREATE ROLE {role} LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER ROLE {role} SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON pg_catalog.pg_trigger, pg_catalog.pg_proc, pg_catalog.pg_attribute, pg_catalog.pg_class, pg_catalog.pg_namespace TO {role}`
	fallbackGrantSQL = `GRANT REFERENCES ON TABLE orders TO {role}`
)

// TestReadOnlyRole: the control-plane's model catalog works with the read-only role of
// docs/deploy.md: a model's published columns through its capture trigger with no privilege on
// the table at all, and a model without a trigger through the REFERENCES grant. The role cannot
// read a row, write, or create anything.
func TestReadOnlyRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ownerURL := devstacktest.Database(t)
	if err := migrations.Up(ctx, ownerURL, migrations.Core); err != nil {
		t.Fatal(err)
	}
	owner, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close(context.Background()) }) // after the role's cleanup below
	u, err := url.Parse(ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	role := devstacktest.UniqueName(t, "ro")
	password := "pw-" + role
	fill := strings.NewReplacer("{role}", role, "{password}", password, "{database}", strings.TrimPrefix(u.Path, "/")).Replace
	for _, sql := range append(strings.Split(readOnlyRoleSQL, ";\n"),
		`CREATE TABLE accounts (id bigint PRIMARY KEY, email text, password_hash text)`,
		`CREATE TRIGGER accounts_distcache AFTER INSERT OR UPDATE OR DELETE ON accounts
			FOR EACH ROW EXECUTE FUNCTION distcache_capture('accounts', 'id', 'except:password_hash')`,
		`INSERT INTO accounts VALUES (1, 'a@x.io', 'secret')`,
		`CREATE TABLE orders (id bigint PRIMARY KEY, total numeric)`,
		fallbackGrantSQL,
	) {
		if _, err := owner.Exec(ctx, fill(sql)); err != nil {
			t.Fatalf("%s: %v", fill(sql), err)
		}
	}
	t.Cleanup(func() {
		// Privileges granted to the role (the database's CONNECT included) go with DROP OWNED.
		for _, sql := range []string{`DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			if _, err := owner.Exec(context.Background(), sql); err != nil {
				t.Logf("%s: %v", sql, err)
			}
		}
	})

	u.User = url.UserPassword(role, password)
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cols := modelcatalog.Columns{Pool: pool}
	for model, want := range map[string][]string{"accounts": {"id", "email"}, "orders": {"id", "total"}} {
		got, err := cols.Fields(ctx, model)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Fields(%s) as the read-only role = %v, %v; want %v", model, got, err, want)
		}
	}
	for _, sql := range []string{
		`SELECT password_hash FROM accounts`,
		`SELECT * FROM distcache_outbox`,
		`INSERT INTO orders VALUES (1, 2)`,
		`CREATE TABLE mine (id int)`,
	} {
		_, err := pool.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		// 42501 insufficient_privilege, 25006 read_only_sql_transaction
		if !errors.As(err, &pgErr) || (pgErr.Code != "42501" && pgErr.Code != "25006") {
			t.Errorf("%s as the read-only role = %v, want it refused", sql, err)
		}
	}
}

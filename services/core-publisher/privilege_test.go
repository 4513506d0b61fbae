package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/distcache/distcache/services/core-publisher/internal/backload"
	"github.com/distcache/distcache/services/core-publisher/internal/pubtest"
	"github.com/distcache/distcache/tools/devstacktest"
)

// publisherRoleSQL is the core-publisher's role of docs/deploy.md ("Schema migrations"):
// DML on distcache's tables, no DDL, SELECT on the models' tables.
const publisherRoleSQL = `CREATE ROLE {role} LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE;
GRANT SELECT, INSERT, UPDATE, DELETE ON distcache_outbox, distcache_outbox_versions, distcache_outbox_dead,
  distcache_outbox_published, distcache_publisher_state TO {role};
GRANT SELECT ON distcache_core_schema_migrations TO {role};
GRANT USAGE ON SEQUENCE distcache_outbox_id_seq TO {role};
GRANT SELECT ON users TO {role}`

// TestPublisherRunsWithoutDDLRights: with the core set applied by its owner, the core-publisher
// runs as the role of docs/deploy.md, which may not create anything: it passes its schema check,
// backloads a model, relays live changes until the outbox is empty, and lists its models.
func TestPublisherRunsWithoutDDLRights(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL) // the owner applies the core set
	pubtest.Exec(t, pool, `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)`)
	pubtest.Exec(t, pool, `INSERT INTO users SELECT g, 'u' || g || '@x.io' FROM generate_series(1, 50) g`)
	pubtest.Exec(t, pool, `CREATE TRIGGER users_distcache AFTER INSERT OR UPDATE OR DELETE ON users
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id')`)

	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	role := devstacktest.UniqueName(t, "pub")
	password := "pw-" + role
	fill := strings.NewReplacer("{role}", role, "{password}", password).Replace
	for _, sql := range strings.Split(publisherRoleSQL, ";\n") {
		pubtest.Exec(t, pool, fill(sql))
	}
	t.Cleanup(func() {
		for _, sql := range []string{`DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			if _, err := pool.Exec(context.Background(), sql); err != nil {
				t.Logf("%s: %v", sql, err)
			}
		}
	})
	u.User = url.UserPassword(role, password)
	roleURL := u.String()

	env := serviceEnv(t, roleURL, k.Addr)
	base, _ := startService(t, env)
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		var st backload.State
		return getJSON(t, base+"/v1/backload/users", &st) == http.StatusOK && st.Status == backload.StatusDone
	}, "the backload of users done as the restricted role")
	pubtest.Exec(t, pool, `UPDATE users SET email = 'new-' || email WHERE id <= 10`)
	waitOutboxEmpty(t, pool, 30*time.Second)
	if n := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox_published WHERE aggregate = 'users'`); n != 50 {
		t.Errorf("published versions of %d keys, want 50", n)
	}

	var out strings.Builder
	if err := run(ctx, []string{"models"}, func(name string) string { return env[name] }, &out, testLogWriter{t}); err != nil ||
		!strings.Contains(out.String(), "users\t") {
		t.Errorf("models as the restricted role: %q, %v", out.String(), err)
	}

	// The role can create nothing.
	conn, err := pgconn.Connect(ctx, roleURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = conn.Exec(ctx, `CREATE TABLE mine (id int)`).Close()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("CREATE TABLE as the publisher's role = %v, want insufficient_privilege", err)
	}
}

package migrations_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// captureTriggers lists a table's distcache_capture triggers as "name level events" (level ROW or
// STATEMENT), sorted.
func captureTriggers(t *testing.T, conn *pgx.Conn, table string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
		SELECT tg.tgname || ' ' || CASE WHEN tg.tgtype & 1 = 1 THEN 'ROW' ELSE 'STATEMENT' END
		       || ' ' || encode(tg.tgargs, 'escape')
		FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
		WHERE tg.tgrelid = $1::regclass AND p.proname = 'distcache_capture' AND NOT tg.tgisinternal
		ORDER BY 1`, table)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestCaptureStatementTrigger: distcache_attach's statement-level triggers write the row-level
// trigger's events (TestCaptureTrigger's sequence, same rows and versions), multi-row statements
// included, one notification per committed change, headers from distcache.headers.
func TestCaptureStatementTrigger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, conn := migrated(t)
	exec(t, conn, `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, name text)`)
	exec(t, conn, `SELECT distcache_attach('users', 'users', 'id')`)
	if got := fmt.Sprint(captureTriggers(t, conn, "users")); got != `[distcache_capture_delete STATEMENT users\000id\000 distcache_capture_insert STATEMENT users\000id\000 distcache_capture_update STATEMENT users\000id\000]` {
		t.Fatalf("triggers after distcache_attach: %s", got)
	}

	listener := connect(t, url)
	exec(t, listener, `LISTEN distcache_outbox`)

	exec(t, conn, `INSERT INTO users VALUES (1, 'a@example.com', 'Ann')`)
	exec(t, conn, `UPDATE users SET name = 'Anna' WHERE id = 1`)
	exec(t, conn, `UPDATE users SET id = 2 WHERE id = 1`) // key change
	exec(t, conn, `DELETE FROM users WHERE id = 2`)
	exec(t, conn, `UPDATE users SET name = 'nobody' WHERE id = 99`) // no row: no event
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO users VALUES (3, 'c@example.com', NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('distcache.headers', '{"traceparent":"00-abc-def-01"}', true)`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO users VALUES (4, 'd@example.com', NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Multi-row statements: three inserts, two key changes and a plain update, a delete of all.
	exec(t, conn, `INSERT INTO users SELECT g, 'u' || g || '@example.com', NULL FROM generate_series(10, 12) g`)
	exec(t, conn, `UPDATE users SET id = id + 100 WHERE id IN (10, 11)`)
	exec(t, conn, `UPDATE users SET name = 'z' WHERE id = 12`)
	exec(t, conn, `DELETE FROM users WHERE id >= 100`)

	user := func(id float64, email string, name any) map[string]any {
		return map[string]any{"id": id, "email": email, "name": name}
	}
	tp := map[string]string{"traceparent": "00-abc-def-01"}
	want := []outboxRow{
		{Key: "1", Version: 1, Op: "upsert", Payload: user(1, "a@example.com", "Ann")},
		{Key: "1", Version: 2, Op: "upsert", Payload: user(1, "a@example.com", "Anna")},
		{Key: "1", Version: 3, Op: "delete"},
		{Key: "2", Version: 1, Op: "upsert", Payload: user(2, "a@example.com", "Anna")},
		{Key: "2", Version: 2, Op: "delete"},
		{Key: "4", Version: 1, Op: "upsert", Payload: user(4, "d@example.com", nil), Headers: tp},
		{Key: "10", Version: 1, Op: "upsert", Payload: user(10, "u10@example.com", nil)},
		{Key: "11", Version: 1, Op: "upsert", Payload: user(11, "u11@example.com", nil)},
		{Key: "12", Version: 1, Op: "upsert", Payload: user(12, "u12@example.com", nil)},
		{Key: "10", Version: 2, Op: "delete"},
		{Key: "11", Version: 2, Op: "delete"},
		{Key: "110", Version: 1, Op: "upsert", Payload: user(110, "u10@example.com", nil)},
		{Key: "111", Version: 1, Op: "upsert", Payload: user(111, "u11@example.com", nil)},
		{Key: "12", Version: 2, Op: "upsert", Payload: user(12, "u12@example.com", "z")},
		{Key: "110", Version: 2, Op: "delete"},
		{Key: "111", Version: 2, Op: "delete"},
	}
	for i := range want {
		if want[i].Headers == nil {
			want[i].Headers = map[string]string{}
		}
	}
	got := outboxRows(t, conn, "users")
	// Within the key-change statement the two deletes and the two upserts may come in either
	// order among themselves (each key's own order is what is promised); sort those pairs.
	if len(got) == len(want) {
		for _, pair := range [][2]int{{9, 10}, {11, 12}, {14, 15}} {
			if got[pair[0]].Key > got[pair[1]].Key {
				got[pair[0]], got[pair[1]] = got[pair[1]], got[pair[0]]
			}
		}
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("outbox rows\n got %s\nwant %s", gotJSON, wantJSON)
	}

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(wctx)
	if err != nil {
		t.Fatalf("WaitForNotification: %v", err)
	}
	if n.Channel != "distcache_outbox" || n.Payload != "users" {
		t.Fatalf("notification %s/%q, want distcache_outbox/users", n.Channel, n.Payload)
	}

	// TRUNCATE is not captured, as with the row-level trigger.
	before := len(got)
	exec(t, conn, `INSERT INTO users VALUES (5, 'e@example.com', NULL)`)
	exec(t, conn, `TRUNCATE users`)
	if after := len(outboxRows(t, conn, "users")); after != before+1 {
		t.Fatalf("%d outbox rows after an insert and a TRUNCATE, want %d", after, before+1)
	}
}

// TestCaptureStatementMatchesRowLevel: the same random statements (multi-row inserts, updates
// with and without key changes, deletes) on a table with the row-level trigger and on one with the
// statement-level triggers give every key the same events, versions and payloads in the same
// order; rows sharing a key (a key column that is not unique) each get their own version in both.
func TestCaptureStatementMatchesRowLevel(t *testing.T) {
	t.Parallel()
	_, conn := migrated(t)
	for _, table := range []string{"by_row", "by_stmt"} {
		exec(t, conn, `CREATE TABLE `+table+` (k bigint PRIMARY KEY, n int NOT NULL)`)
		exec(t, conn, `CREATE TABLE `+table+`_shared (id int PRIMARY KEY, k int NOT NULL, n int NOT NULL)`)
	}
	exec(t, conn, `CREATE TRIGGER by_row_distcache AFTER INSERT OR UPDATE OR DELETE ON by_row
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('by_row', 'k')`)
	exec(t, conn, `CREATE TRIGGER by_row_distcache AFTER INSERT OR UPDATE OR DELETE ON by_row_shared
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('by_row_shared', 'k')`)
	exec(t, conn, `SELECT distcache_attach('by_stmt', 'by_stmt', 'k')`)
	exec(t, conn, `SELECT distcache_attach('by_stmt_shared', 'by_stmt_shared', 'k')`)

	rng := rand.New(rand.NewPCG(7, 19))
	var live []int64 // keys present, the same in both tables
	next := int64(1)
	pick := func(n int) []int64 {
		rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		return live[:min(n, len(live))]
	}
	list := func(ks []int64) string {
		s := make([]string, len(ks))
		for i, k := range ks {
			s[i] = fmt.Sprint(k)
		}
		return strings.Join(s, ", ")
	}
	for step := range 300 {
		var stmt string
		switch r := rng.IntN(10); {
		case r < 4 || len(live) < 5: // insert 1..5 new keys
			var vals []string
			for range 1 + rng.IntN(5) {
				vals = append(vals, fmt.Sprintf("(%d, %d)", next, step))
				live = append(live, next)
				next++
			}
			stmt = `INSERT INTO %s VALUES ` + strings.Join(vals, ", ")
		case r < 7: // update 1..4 keys, moving some to new keys
			ks := pick(1 + rng.IntN(4)) // aliases live's head: a moved key is replaced in live
			old := list(ks)
			set := fmt.Sprintf("n = %d", step)
			cases := ""
			for i, k := range ks {
				if rng.IntN(2) == 0 {
					cases += fmt.Sprintf(" WHEN %d THEN %d", k, next)
					ks[i] = next
					next++
				}
			}
			if cases != "" {
				set += ", k = CASE k" + cases + " ELSE k END"
			}
			stmt = `UPDATE %s SET ` + set + ` WHERE k IN (` + old + `)`
		default: // delete 1..3 keys
			ks := pick(1 + rng.IntN(3))
			stmt = `DELETE FROM %s WHERE k IN (` + list(ks) + `)`
			live = live[len(ks):]
		}
		for _, table := range []string{"by_row", "by_stmt"} {
			exec(t, conn, fmt.Sprintf(stmt, table))
		}
	}
	// Rows sharing a key, in one statement each.
	for _, stmt := range []string{
		`INSERT INTO %s VALUES (1, 7, 0), (2, 7, 0), (3, 8, 0)`,
		`UPDATE %s SET n = n + 1`,
		`UPDATE %s SET n = n + 1 WHERE k = 7`,
		`DELETE FROM %s WHERE id = 1`,
		`DELETE FROM %s`,
	} {
		for _, table := range []string{"by_row_shared", "by_stmt_shared"} {
			exec(t, conn, fmt.Sprintf(stmt, table))
		}
	}

	for _, agg := range []string{"", "_shared"} {
		history := func(agg string) (map[string][]string, int) {
			m := map[string][]string{}
			rows := outboxRows(t, conn, agg)
			for _, r := range rows {
				p, _ := json.Marshal(r.Payload)
				m[r.Key] = append(m[r.Key], fmt.Sprintf("v%d %s %s", r.Version, r.Op, p))
			}
			return m, len(rows)
		}
		byRow, nRow := history("by_row" + agg)
		byStmt, nStmt := history("by_stmt" + agg)
		if nRow != nStmt || (agg == "" && nRow < 300) || (agg != "" && nRow != 11) {
			t.Fatalf("by_row%s: %d events, by_stmt%s: %d", agg, nRow, agg, nStmt)
		}
		for k, want := range byRow {
			if got := byStmt[k]; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("key %s of by_stmt%s:\n row-level %q\n statement %q", k, agg, want, got)
			}
		}
		if len(byStmt) != len(byRow) {
			t.Errorf("by_stmt%s has %d keys, by_row%s %d", agg, len(byStmt), agg, len(byRow))
		}
	}
}

// TestCaptureStatementConcurrentVersions: writers of the same keys through the statement-level
// triggers get versions in commit order per key, as with the row-level trigger.
func TestCaptureStatementConcurrentVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, conn := migrated(t)
	exec(t, conn, `CREATE TABLE orgs (slug text PRIMARY KEY, n int NOT NULL)`)
	exec(t, conn, `SELECT distcache_attach('orgs', 'orgs', 'slug')`)
	exec(t, conn, `INSERT INTO orgs VALUES ('acme', 0), ('beta', 0)`)

	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			for range each {
				if _, err := c.Exec(ctx, `UPDATE orgs SET n = n + 1`); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, slug := range []string{"acme", "beta"} {
		var got []outboxRow
		for _, r := range outboxRows(t, conn, "orgs") {
			if r.Key == slug {
				got = append(got, r)
			}
		}
		if len(got) != 1+writers*each {
			t.Fatalf("%s: %d outbox rows, want %d", slug, len(got), 1+writers*each)
		}
		for i, r := range got {
			if r.Version != int64(i+1) || r.Payload["n"] != float64(i) {
				t.Fatalf("%s row %d = %+v, want version %d n %d", slug, i, r, i+1, i)
			}
		}
	}
}

// TestCaptureStatementPublishedColumns: distcache_attach's column spec reaches the statement-level
// triggers; left-out columns never reach the outbox.
func TestCaptureStatementPublishedColumns(t *testing.T) {
	t.Parallel()
	_, conn := migrated(t)
	exec(t, conn, `CREATE TABLE accounts (id int PRIMARY KEY, email text, password_hash text, api_key text)`)
	exec(t, conn, `SELECT distcache_attach('accounts', 'accounts', 'id', 'except:password_hash|api_key')`)
	exec(t, conn, `INSERT INTO accounts VALUES (1, 'a@example.com', '$2a$10$secret', 'key-1'), (2, 'b@example.com', '$2a$10$s2', 'key-2')`)
	exec(t, conn, `UPDATE accounts SET password_hash = '$2a$10$other' WHERE id = 1`)
	got, _ := json.Marshal(outboxRows(t, conn, "accounts"))
	want := `[{"Key":"1","Version":1,"Op":"upsert","Payload":{"email":"a@example.com","id":1},"Headers":{}},` +
		`{"Key":"2","Version":1,"Op":"upsert","Payload":{"email":"b@example.com","id":2},"Headers":{}},` +
		`{"Key":"1","Version":2,"Op":"upsert","Payload":{"email":"a@example.com","id":1},"Headers":{}}]`
	if string(got) != want {
		t.Errorf("outbox rows\n got %s\nwant %s", got, want)
	}
}

// TestCaptureStatementMisuse: distcache_attach refuses bad arguments with an error naming them;
// a hand-made statement trigger without the transition tables, or a NULL key, fails the write
// with a clear error; distcache_attach replaces a row-level trigger (no change captured twice)
// and can be run again.
func TestCaptureStatementMisuse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, conn := migrated(t)
	exec(t, conn, `CREATE TABLE a (id int PRIMARY KEY, email text)`)
	for _, tt := range []struct{ sql, wantIn string }{
		{`SELECT distcache_attach('a', 'a.b', 'id')`, `aggregate name "a.b" must be 1 to 200`},
		{`SELECT distcache_attach('a', '', 'id')`, `aggregate name "" must be 1 to 200`},
		{`SELECT distcache_attach('a', 'a', 'nope')`, `key column "nope" is not a column of the table`},
		{`SELECT distcache_attach('a', 'a', 'id', 'hide:email')`, `column spec "hide:email" must be only:`},
		{`SELECT distcache_attach('nosuchtable', 'a', 'id')`, `relation "nosuchtable" does not exist`},
	} {
		_, err := conn.Exec(ctx, tt.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, tt.wantIn) {
			t.Errorf("%s = %v, want an error containing %q", tt.sql, err, tt.wantIn)
		}
	}
	if got := captureTriggers(t, conn, "a"); len(got) != 0 {
		t.Fatalf("refused distcache_attach calls left triggers: %v", got)
	}

	exec(t, conn, `CREATE TABLE b (id int PRIMARY KEY)`)
	exec(t, conn, `CREATE TRIGGER b_distcache AFTER INSERT ON b FOR EACH STATEMENT EXECUTE FUNCTION distcache_capture('b', 'id')`)
	exec(t, conn, `CREATE TABLE c (id int PRIMARY KEY, k int)`)
	exec(t, conn, `SELECT distcache_attach('c', 'c', 'k')`)
	exec(t, conn, `INSERT INTO c VALUES (10, 10), (11, 11)`)
	for _, tt := range []struct{ sql, wantIn string }{
		{`INSERT INTO b VALUES (1)`, "needs REFERENCING NEW TABLE AS distcache_new"},
		{`INSERT INTO c VALUES (1, NULL)`, `key column "k" is missing or NULL`},         // one row
		{`INSERT INTO c VALUES (2, 5), (3, NULL)`, `key column "k" is missing or NULL`}, // set-based
		{`UPDATE c SET k = NULL`, `key column "k" is missing or NULL`},
	} {
		_, err := conn.Exec(ctx, tt.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, tt.wantIn) {
			t.Errorf("%s = %v, want an error containing %q", tt.sql, err, tt.wantIn)
		}
	}

	// Replacing the row-level trigger, twice: one event per change.
	exec(t, conn, `CREATE TRIGGER a_distcache AFTER INSERT OR UPDATE OR DELETE ON a
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('a', 'id')`)
	exec(t, conn, `INSERT INTO a VALUES (1, 'x')`)
	exec(t, conn, `SELECT distcache_attach('a', 'a', 'id')`)
	exec(t, conn, `SELECT distcache_attach('a', 'a', 'id')`)
	exec(t, conn, `INSERT INTO a VALUES (2, 'y')`)
	exec(t, conn, `UPDATE a SET email = 'z'`)
	if got := captureTriggers(t, conn, "a"); len(got) != 3 || !strings.Contains(got[0], "STATEMENT") {
		t.Fatalf("triggers after distcache_attach over a row-level one: %v", got)
	}
	// Another aggregate of the same table: its row-level trigger stays; a second
	// statement-level capture is refused, naming the first.
	exec(t, conn, `CREATE TABLE d (id int PRIMARY KEY)`)
	exec(t, conn, `CREATE TRIGGER d_audit AFTER INSERT OR UPDATE OR DELETE ON d
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('d_audit', 'id')`)
	exec(t, conn, `SELECT distcache_attach('d', 'd', 'id')`)
	_, err := conn.Exec(ctx, `SELECT distcache_attach('d', 'd_other', 'id')`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, `statement-level capture is of aggregate "d"`) {
		t.Errorf("distcache_attach of a second aggregate = %v, want the refusal naming aggregate d", err)
	}
	exec(t, conn, `INSERT INTO d VALUES (1)`)
	if n := len(outboxRows(t, conn, "d")) + len(outboxRows(t, conn, "d_audit")); n != 2 {
		t.Errorf("one insert into a table captured as d and d_audit: %d events, want 2", n)
	}

	var keys []string
	for _, r := range outboxRows(t, conn, "a") {
		keys = append(keys, fmt.Sprintf("%s/v%d", r.Key, r.Version))
	}
	if fmt.Sprint(keys) != "[1/v1 2/v1 1/v2 2/v2]" {
		t.Fatalf("events after replacing the row-level trigger: %v, want [1/v1 2/v1 1/v2 2/v2]", keys)
	}
}

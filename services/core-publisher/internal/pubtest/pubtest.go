// Package pubtest holds helpers shared by the core-publisher's integration
// tests: a migrated database with a captured table, a topic reader and the
// per-key order checks. Only tests import it.
package pubtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/migrations"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
)

// CapturedTableSQL creates table name (id bigint primary key, n bigint, body
// text) with the distcache_capture trigger as aggregate name.
func CapturedTableSQL(name string) string {
	return fmt.Sprintf(`CREATE TABLE %[1]s (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0, body text NOT NULL DEFAULT '');
CREATE TRIGGER %[1]s_distcache AFTER INSERT OR UPDATE OR DELETE ON %[1]s
	FOR EACH ROW EXECUTE FUNCTION distcache_capture('%[1]s', 'id');`, name)
}

// Migrate applies the migrations to dbURL and returns a pool on it, closed
// at cleanup.
func Migrate(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := migrations.Up(ctx, dbURL, migrations.Core); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Exec runs sql on pool and fails the test on error.
func Exec(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// Count returns the result of a count query.
func Count(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("count %q: %v", sql, err)
	}
	return n
}

// Event is one record read back from a topic.
type Event struct {
	Offset  int64
	Key     string
	Version int64
	Op      string
	Value   []byte
}

// Reader reads a topic from its start.
type Reader struct {
	cl     *kgo.Client
	Events []Event
}

// NewReader returns a reader of topic on broker addr, closed at cleanup;
// opts are added to the client's (kgo.FetchIsolationLevel(kgo.ReadCommitted())
// to skip aborted transactions' records, as the cache-producer does).
func NewReader(t testing.TB, addr, topic string, opts ...kgo.Opt) *Reader {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	t.Cleanup(cl.Close)
	return &Reader{cl: cl}
}

// ReadUntil polls until cond(all events so far) is true or timeout passes
// (then it fails the test with msg).
func (r *Reader) ReadUntil(t testing.TB, timeout time.Duration, cond func([]Event) bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond(r.Events) {
		if time.Now().After(deadline) {
			t.Fatalf("topic read: condition not met within %v (%d events read): %s", timeout, len(r.Events), msg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := r.cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(rec *kgo.Record) {
			e := Event{Offset: rec.Offset, Key: string(rec.Key), Value: rec.Value}
			for _, h := range rec.Headers {
				switch h.Key {
				case events.HeaderVersion:
					e.Version, _ = strconv.ParseInt(string(h.Value), 10, 64)
				case events.HeaderOp:
					e.Op = string(h.Value)
				}
			}
			r.Events = append(r.Events, e)
		})
	}
}

// ReadAll reads everything on the topic so far: it appends a marker record
// (key "__marker__") with a client of its own and reads until the marker,
// which it drops. Call it once every record of interest was acknowledged.
func (r *Reader) ReadAll(t testing.TB, addr, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatalf("marker client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const marker = "__marker__"
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(marker), Value: []byte(`{}`)}).FirstErr(); err != nil {
		t.Fatalf("produce marker: %v", err)
	}
	r.ReadUntil(t, 30*time.Second, func(evs []Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Key == marker
	}, "read to the marker")
	r.Events = r.Events[:len(r.Events)-1]
}

// Versions returns each key's versions in topic order.
func Versions(evs []Event) map[string][]int64 {
	out := map[string][]int64{}
	for _, e := range evs {
		out[e.Key] = append(out[e.Key], e.Version)
	}
	return out
}

// Latest returns each key's last event in topic order (what compaction keeps).
func Latest(evs []Event) map[string]Event {
	out := map[string]Event{}
	for _, e := range evs {
		out[e.Key] = e
	}
	return out
}

// HasAllVersions reports whether every key of want has every version 1..want[key].
func HasAllVersions(evs []Event, want map[string]int64) bool {
	seen := map[string]map[int64]bool{}
	for _, e := range evs {
		if seen[e.Key] == nil {
			seen[e.Key] = map[int64]bool{}
		}
		seen[e.Key][e.Version] = true
	}
	for k, n := range want {
		for v := int64(1); v <= n; v++ {
			if !seen[k][v] {
				return false
			}
		}
	}
	return true
}

// CheckOrder checks one key's version sequence: it is made of runs of
// consecutive versions (v, v+1, v+2, ...); the first run starts at 1; a
// later run (a redelivery after a crash or failover) starts at most one past
// the highest version seen so far, and there are at most maxRewinds of them.
// So every version arrives, in order, and a redelivery replays a suffix of
// the history instead of interleaving old records between new ones.
func CheckOrder(key string, vs []int64, maxRewinds int) error {
	if len(vs) == 0 {
		return nil
	}
	if vs[0] != 1 {
		return fmt.Errorf("key %s: first version %d, want 1 (versions %v)", key, vs[0], vs)
	}
	maxSeen, rewinds := vs[0], 0
	for i := 1; i < len(vs); i++ {
		if vs[i] == vs[i-1]+1 {
			maxSeen = max(maxSeen, vs[i])
			continue
		}
		if vs[i] > maxSeen+1 {
			return fmt.Errorf("key %s: version %d after %d skips versions (versions %v)", key, vs[i], maxSeen, vs)
		}
		rewinds++
		if rewinds > maxRewinds {
			return fmt.Errorf("key %s: %d redelivery rewinds, at most %d allowed (versions %v)", key, rewinds, maxRewinds, vs)
		}
		maxSeen = max(maxSeen, vs[i])
	}
	return nil
}

// JSONEqual reports whether two JSON documents are equal as values.
func JSONEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

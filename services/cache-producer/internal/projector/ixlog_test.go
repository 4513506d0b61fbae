package projector

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// indexModel is what a generation's index must hold after a sequence of records: each
// source key's last upsert (projected key, version offset+1); nothing for a deleted one.
type indexModel map[string]ledger.Entry

func (m indexModel) add(recs []feed.Record) {
	for _, r := range recs {
		if r.Delete {
			delete(m, r.Key)
			continue
		}
		m[r.Key] = ledger.Entry{Key: r.Payload[1].Value.Text, Version: r.Offset + 1}
	}
}

// randomBatch returns n records from offset at over source keys 0..keys-1: upserts that
// keep or change a key's e-mail (a re-key), and deletes.
func randomBatch(r *rand.Rand, at, n, keys int) []feed.Record {
	recs := make([]feed.Record, n)
	for i := range recs {
		id := strconv.Itoa(r.IntN(keys))
		recs[i] = feed.Record{Offset: int64(at + i), Topic: "t", Key: id}
		if r.IntN(4) == 0 {
			recs[i].Delete = true
			continue
		}
		email := string(rune('a'+r.IntN(4))) + id + "@example.com"
		recs[i].Payload = projection.Members{{Name: "id", Value: projection.Value{Kind: projection.KindNumber, Text: id}},
			{Name: "email", Value: projection.Value{Kind: projection.KindString, Text: email}}}
	}
	return recs
}

// storedIndex reads generation 1 of tg's log-layout index from Redis, as a writer taking
// over would.
func storedIndex(t *testing.T, w *Writer, tg Target) ledger.LogIndex {
	t.Helper()
	li, err := w.ledger.LoadLogIndex(context.Background(), w.ledger.Client(), tg.Projection, tg.Generation, 0)
	if err != nil {
		t.Fatal(err)
	}
	return li
}

func cacheEntries(w *Writer, tg Target) (map[string]ledger.Entry, bool) {
	c := w.cacheOf(tg)
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.entries), c.log
}

func diffIndex(t *testing.T, what string, got map[string]ledger.Entry, want indexModel) {
	t.Helper()
	if maps.Equal(got, map[string]ledger.Entry(want)) {
		return
	}
	n := 0
	for k, e := range want {
		if g, ok := got[k]; (!ok || g != e) && n < 5 {
			t.Errorf("%s: key %s = %+v, want %+v", what, k, g, e)
			n++
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok && n < 10 {
			t.Errorf("%s: key %s = %+v, want none", what, k, g)
			n++
		}
	}
	t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
}

// TestLogIndexMatchesModel: random batches of upserts, re-keys and deletes written to a
// log-layout generation, with a small compaction threshold so that snapshots are switched
// in often, and the writer replaced by a new one (a restart or a takeover, reading snapshot
// and log back) now and then. After every batch the writer's in-memory index, and the index
// read back from snapshot + log, equal the model; the values in Redis follow the index.
func TestLogIndexMatchesModel(t *testing.T) {
	t.Parallel()
	w0, rdb, _ := txWriter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 19))
	tg := txTarget(t, "logmodel")
	newWriter := func() *Writer {
		w := NewWriter(w0.pub, w0.ledger)
		w.compactMin = 256
		return w
	}
	w := newWriter()
	tc := w.newTxConn()
	defer func() { tc.close() }()
	model := indexModel{}
	snaps := map[string]bool{}
	at := 0
	for b := range 120 {
		recs := randomBatch(r, at, 1+r.IntN(40), 150)
		next := int64(at + len(recs))
		_, _, err := w.writeTx(ctx, tc, tg, projectAll(tg, recs), int64(at), next, 0)
		if err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
		model.add(recs)
		at = int(next)
		got, isLog := cacheEntries(w, tg)
		if !isLog {
			t.Fatalf("batch %d: the generation left the log layout", b)
		}
		diffIndex(t, "in memory after batch "+strconv.Itoa(b), got, model)
		li := storedIndex(t, w, tg)
		diffIndex(t, "read back after batch "+strconv.Itoa(b), li.Entries, model)
		snaps[li.Snapshot] = true
		if r.IntN(10) == 0 { // a restart, or another replica taking over
			tc.close()
			w = newWriter()
			tc = w.newTxConn()
		}
	}
	if len(snaps) < 5 {
		t.Errorf("%d snapshots switched in over 120 batches: compaction did not run", len(snaps))
	}
	if mark := rdb.Get(ctx, ledger.IndexFormatKey(tg.Projection, 1)).Val(); mark != "log1" {
		t.Errorf("layout mark %q, want log1", mark)
	}
	if n := rdb.Get(ctx, ledger.IndexCountKey(tg.Projection, 1)).Val(); n != strconv.Itoa(len(model)) {
		t.Errorf("index count %s, want %d", n, len(model))
	}
	// Only the current snapshot list is left; the log is shorter than the batches.
	li := storedIndex(t, w, tg)
	lists, _ := rdb.Keys(ctx, ledger.IndexSnapshotListKey(tg.Projection, 1, "*")).Result()
	if len(lists) != 1 || lists[0] != ledger.IndexSnapshotListKey(tg.Projection, 1, li.Snapshot) {
		t.Errorf("snapshot lists %q, want only the current %s", lists, li.Snapshot)
	}
	if li.LogEntries >= 120 {
		t.Errorf("%d log entries after 120 batches: never compacted", li.LogEntries)
	}
	// Values follow the index: every indexed projected key holds a value of its version.
	for k, e := range model {
		v, err := rdb.Get(ctx, distcache.ValueKey(tg.Projection, 1, e.Key)).Result()
		if err != nil || !isSet(v) || v[:16] != (ledger.Entry{Version: e.Version}).Encode()[:16] {
			t.Fatalf("source key %s: value of %s = %q, %v; want version %d", k, e.Key, v, err, e.Version)
		}
	}
	// Forget leaves no key of the generation's bookkeeping.
	if _, err := w.ledger.Forget(ctx, tg.Projection, 1); err != nil {
		t.Fatal(err)
	}
	if left, _ := rdb.Keys(ctx, ledger.Pattern(tg.Projection, 1)).Result(); len(left) != 0 {
		t.Errorf("keys left after Forget: %q", left)
	}
}

// TestLogCompactionCrash: a writer that dies once it has written a compaction's snapshot
// (before the transaction that switches it in) leaves the old snapshot and log in force and
// complete; the next writer reads them back, goes on, and compacts later. A compaction whose
// transaction loses to another writer removes the snapshot it wrote.
func TestLogCompactionCrash(t *testing.T) {
	t.Parallel()
	w0, rdb, _ := txWriter(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg := txTarget(t, "logcrash")
	var crash atomic.Bool
	crash.Store(true)
	crashed := errors.New("crashed mid-compaction")
	w := NewWriter(w0.pub, w0.ledger, WithFault(func(_ context.Context, _ Target, s Step) error {
		if s == SnapshotWritten && crash.Load() {
			return crashed
		}
		return nil
	}))
	w.compactMin = 256
	r := rand.New(rand.NewPCG(7, 7))
	model := indexModel{}
	at := 0
	write := func(w *Writer) error {
		recs := randomBatch(r, at, 20, 100)
		_, err := w.WriteBatch(ctx, tg, recs, int64(at+20))
		if err == nil {
			model.add(recs)
			at += 20
		}
		return err
	}
	var before ledger.LogIndex
	for b := 0; ; b++ {
		before = storedIndex(t, w, tg)
		err := write(w)
		if errors.Is(err, crashed) {
			break
		}
		if err != nil || b > 50 {
			t.Fatalf("batch %d: %v (no compaction started)", b, err)
		}
	}
	after := storedIndex(t, w, tg)
	if after.Snapshot != before.Snapshot || after.LogEntries != before.LogEntries {
		t.Fatalf("the crash changed the stored index: snapshot %q → %q, %d → %d log entries", before.Snapshot, after.Snapshot, before.LogEntries, after.LogEntries)
	}
	diffIndex(t, "read back after the crash", after.Entries, model)
	lists, _ := rdb.Keys(ctx, ledger.IndexSnapshotListKey(tg.Projection, 1, "*")).Result()
	if len(lists) != 1+min(len(after.Snapshot), 1) {
		t.Fatalf("snapshot lists %q after the crash: want the unreferenced one next to the current", lists)
	}

	// A new writer (the process restarted) reads snapshot + log back and compacts.
	crash.Store(false)
	w2 := NewWriter(w0.pub, w0.ledger)
	w2.compactMin = 256
	for b := 0; storedIndex(t, w2, tg).Snapshot == after.Snapshot; b++ {
		if err := write(w2); err != nil || b > 50 {
			t.Fatalf("after the crash, batch %d: %v (no compaction)", b, err)
		}
	}
	got, _ := cacheEntries(w2, tg)
	diffIndex(t, "in memory after the restart", got, model)
	diffIndex(t, "read back after the restart", storedIndex(t, w2, tg).Entries, model)

	// A compaction whose transaction loses (another client writes the offset between the
	// snapshot and the EXEC) removes its snapshot and the batch lands on the next attempt.
	var lost atomic.Bool
	w3 := NewWriter(w0.pub, w0.ledger, WithFault(func(ctx context.Context, _ Target, s Step) error {
		if s == SnapshotWritten && lost.CompareAndSwap(false, true) {
			off := rdb.Get(ctx, ledger.OffsetKey(tg.Projection, 1)).Val()
			return rdb.Set(ctx, ledger.OffsetKey(tg.Projection, 1), off, 0).Err()
		}
		return nil
	}))
	w3.compactMin = 1
	for b := 0; !lost.Load(); b++ {
		if err := write(w3); err != nil || b > 50 {
			t.Fatalf("batch %d: %v (no compaction)", b, err)
		}
	}
	if !lost.Load() || w3.Conflicts() == 0 {
		t.Fatalf("no compaction lost its transaction (fault %v, conflicts %d)", lost.Load(), w3.Conflicts())
	}
	cur := storedIndex(t, w3, tg)
	diffIndex(t, "read back after the lost compaction", cur.Entries, model)
	lists, _ = rdb.Keys(ctx, ledger.IndexSnapshotListKey(tg.Projection, 1, "*")).Result()
	// The list from the crash stays (nothing refers to it; Forget removes it), the current one,
	// and no third.
	if len(lists) != 2 {
		t.Errorf("snapshot lists %q; want the crash's orphan and the current one", lists)
	}
	if _, err := w3.ledger.Forget(ctx, tg.Projection, 1); err != nil {
		t.Fatal(err)
	}
	if left, _ := rdb.Keys(ctx, ledger.Pattern(tg.Projection, 1)).Result(); len(left) != 0 {
		t.Errorf("keys left after Forget: %q", left)
	}
}

// TestLogZombieFenced: a writer whose claim was taken over cannot append to the log, even
// with its watch armed from before the takeover (the takeover's writes abort its EXEC, and
// the claim read again fences it); the new owner reads the log back and its index is the
// one in Redis.
func TestLogZombieFenced(t *testing.T) {
	t.Parallel()
	w0, rdb, _ := txWriter(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg := txTarget(t, "logzombie")
	led := w0.ledger
	zombie := NewWriter(w0.pub, led)
	zc := ledger.NewClaim("zombie")
	if _, err := led.ClaimIf(ctx, tg.Projection, 1, zc, false); err != nil {
		t.Fatal(err)
	}
	zombie.SetClaim(tg, zc)
	ztc := zombie.newTxConn()
	defer ztc.close()
	model := indexModel{}
	recs := emailRecords(0, 0, 50, "u")
	if _, _, err := zombie.writeTx(ctx, ztc, tg, projectAll(tg, recs), 0, 50, 0); err != nil {
		t.Fatal(err)
	}
	model.add(recs)
	logLen := func() int64 { return rdb.LLen(ctx, ledger.IndexLogKey(tg.Projection, 1)).Val() }

	// The takeover: a new claim, and the new owner writes a batch (reading the log back).
	owner := NewWriter(w0.pub, led)
	oc := ledger.NewClaim("owner")
	if _, err := led.ClaimIf(ctx, tg.Projection, 1, oc, false); err != nil {
		t.Fatal(err)
	}
	owner.SetClaim(tg, oc)
	recs = emailRecords(50, 0, 50, "v") // every key re-keyed
	if _, err := owner.WriteBatch(ctx, tg, recs, 100); err != nil {
		t.Fatal(err)
	}
	model.add(recs)
	n := logLen()

	// The zombie's next batch, on its connection whose watch (and the reads it plans from)
	// was armed before the takeover: its EXEC is aborted, and the claim read again fences it.
	_, _, err := zombie.writeTx(ctx, ztc, tg, projectAll(tg, emailRecords(100, 0, 50, "z")), -1, 150, 0)
	if !errors.Is(err, ErrFenced) || zombie.Conflicts() == 0 {
		t.Fatalf("zombie's batch: err = %v, %d aborted transactions; want ErrFenced after one", err, zombie.Conflicts())
	}
	// Its next one, read afresh, is fenced before anything is planned.
	if _, _, err := zombie.writeTx(ctx, ztc, tg, projectAll(tg, emailRecords(100, 0, 50, "z")), 100, 150, 0); !errors.Is(err, ErrFenced) {
		t.Fatalf("zombie's second batch: err = %v, want ErrFenced", err)
	}
	if logLen() != n {
		t.Fatalf("the zombie appended to the log: %d entries, was %d", logLen(), n)
	}
	if off, _, _ := led.Offset(ctx, tg.Projection, 1); off != 100 {
		t.Fatalf("offset %d after the zombie's batch, want 100", off)
	}
	diffIndex(t, "read back", storedIndex(t, owner, tg).Entries, model)
	got, _ := cacheEntries(owner, tg)
	diffIndex(t, "the owner's in-memory index", got, model)
	if v := rdb.Get(ctx, distcache.ValueKey(tg.Projection, 1, "z7@example.com")).Val(); v != "" {
		t.Fatalf("the zombie wrote a value: %q", v)
	}
}

// TestLogLayoutLeavesPastBudget: a log-layout generation whose index outgrows its share of
// the budget moves to the bucketed layout in one transaction, holding its whole index there;
// one within the budget stays in the log layout.
func TestLogLayoutLeavesPastBudget(t *testing.T) {
	t.Parallel()
	w, rdb, _ := txWriter(t)
	w.cacheMax = 300
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	small, big := txTarget(t, "logsmall"), txTarget(t, "logbig")
	model := indexModel{}
	for i := range 4 {
		recs := emailRecords(i*100, i*100, 100, "u")
		if _, err := w.WriteBatch(ctx, big, recs, int64(i*100+100)); err != nil {
			t.Fatal(err)
		}
		model.add(recs)
		if i == 0 {
			if _, err := w.WriteBatch(ctx, small, emailRecords(0, 0, 10, "s"), 10); err != nil {
				t.Fatal(err)
			}
		}
	}
	if m := rdb.Get(ctx, ledger.IndexFormatKey(small.Projection, 1)).Val(); m != "log1" {
		t.Errorf("small generation: mark %q, want log1", m)
	}
	if m := rdb.Get(ctx, ledger.IndexFormatKey(big.Projection, 1)).Val(); m != "hash16" {
		t.Fatalf("generation past its share: mark %q, want hash16", m)
	}
	if n := rdb.Exists(ctx, ledger.IndexLogKey(big.Projection, 1), ledger.IndexSnapshotKey(big.Projection, 1)).Val(); n != 0 {
		t.Errorf("%d log-layout keys left after the move", n)
	}
	got := map[string]ledger.Entry{}
	err := w.ledger.ScanIndex(ctx, big.Projection, 1, ledger.FormatBucketed, func(ch []ledger.SourceEntry) error {
		for _, se := range ch {
			got[se.Source] = se.Entry
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	diffIndex(t, "bucketed index after the move", got, model)
	if n := rdb.Get(ctx, ledger.IndexCountKey(big.Projection, 1)).Val(); n != "400" {
		t.Errorf("index count %s, want 400", n)
	}
	if held := w.IndexCacheEntries(); held > 300 {
		t.Errorf("%d entries held, budget 300", held)
	}
}

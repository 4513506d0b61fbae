package projector

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

func TestVersionIsOffsetPlusOne(t *testing.T) {
	t.Parallel()
	for _, off := range []int64{0, 1, 1 << 40} {
		if got := Version(off); got != off+1 || got <= 0 {
			t.Errorf("Version(%d) = %d", off, got)
		}
	}
}

// TestReasonClass: the dead-letter reason class of what decoding and
// projecting a record can fail with.
func TestReasonClass(t *testing.T) {
	t.Parallel()
	kafkaRecord := func(value string, headers bool) *kgo.Record {
		e := events.Envelope{Aggregate: "users", Key: "k1", Version: 3, Op: events.OpUpsert, Payload: []byte(`{"id":1}`),
			EventID: events.NewEventID(), SourceTime: time.Now()}
		r, err := events.ToRecord(e, "distcache")
		if err != nil {
			t.Fatal(err)
		}
		r.Value = []byte(value)
		if !headers {
			r.Headers = nil
		}
		return r
	}
	tg := planTarget(t)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"not json", feed.Decode(kafkaRecord("{oops", true)).Err, ReasonNotJSON},
		{"json array", feed.Decode(kafkaRecord("[1,2]", true)).Err, ReasonNotJSON},
		{"no headers", feed.Decode(kafkaRecord(`{"id":1}`, false)).Err, ReasonMalformed},
		{"missing key field", project(tg, &feed.Record{Key: "k", Payload: members("1", "", "active")}).dead, ReasonMissingKey},
		{"value too large", fmt.Errorf("write: %w", distcache.ErrValueTooLarge), ReasonRefused},
		{"anything else", errors.New("boom"), ReasonProjectFail},
	}
	for _, tt := range tests {
		if tt.err == nil {
			t.Errorf("%s: no error to classify", tt.name)
			continue
		}
		if got := ReasonClass(tt.err); got != tt.want {
			t.Errorf("%s: ReasonClass(%v) = %q, want %q", tt.name, tt.err, got, tt.want)
		}
	}
}

// planTarget is the projection the planner tests write: key {email},
// only active users.
func planTarget(t testing.TB) Target {
	t.Helper()
	c, err := projection.Compile(projection.Definition{
		Name: "plan_users", Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"},
		Filter: &projection.Filter{Field: "status", Op: projection.OpEq, Values: []string{"active"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return Target{Projection: "plan_users", Generation: 1, Compiled: c}
}

// members is a payload with id, email (left out when "") and status.
func members(id, email, status string) projection.Members {
	ms := projection.Members{{Name: "id", Value: projection.Value{Kind: projection.KindString, Text: id}}}
	if email != "" {
		ms = append(ms, projection.Member{Name: "email", Value: projection.Value{Kind: projection.KindString, Text: email}})
	}
	return append(ms, projection.Member{Name: "status", Value: projection.Value{Kind: projection.KindString, Text: status}})
}

// cell is a projected key as stored: its version, and its value or a
// tombstone.
type cell struct {
	version int64
	deleted bool
	value   string
}

// world is what a generation holds: its values and its source-key index.
type world struct {
	store map[string]cell
	index map[string]ledger.Entry
}

func (w world) clone() world { return world{store: maps.Clone(w.store), index: maps.Clone(w.index)} }

// indexReader and versionReader read w, as Redis would answer.
func (w world) indexReader() indexReader {
	return func(skeys []string) ([]ledger.Entry, error) {
		out := make([]ledger.Entry, len(skeys))
		for i, k := range skeys {
			out[i] = w.index[k]
		}
		return out, nil
	}
}

func (w world) versionReader() versionReader {
	return func(keys []string) ([]int64, error) {
		out := make([]int64, len(keys))
		for i, k := range keys {
			out[i] = w.store[k].version
		}
		return out, nil
	}
}

// writeValues applies p's changes to w, as the Publisher would (every
// version a plan writes is newer than what is stored).
func (w world) writeValues(t *testing.T, p *Plan) {
	t.Helper()
	for _, c := range p.changes {
		if cur := w.store[c.Key]; c.Version <= cur.version {
			t.Fatalf("change %+v does not supersede the stored version %d", c, cur.version)
		}
		w.store[c.Key] = cell{version: c.Version, deleted: c.Op == distcache.OpDelete, value: string(c.Value)}
	}
}

// commit applies p's bookkeeping to w's index and returns its dead letters.
func (w world) commit(p *Plan) ledger.Commit {
	c := p.commit()
	for _, se := range c.Set {
		w.index[se.Source] = se.Entry
	}
	for _, k := range c.Delete {
		delete(w.index, k)
	}
	return c
}

// model is the batch semantics written plainly, one record at a time over
// a world (the package doc's Ownership, Versions and dead letters).
type model struct {
	world
	dead                    []int64 // offsets of dead letters, in order
	filtered, sets, deletes int
}

func (m *model) apply(tg Target, r *feed.Record) {
	v := r.Offset + 1
	var key, value string
	keep := false
	switch {
	case r.Err != nil:
		m.dead = append(m.dead, r.Offset)
	case r.Delete:
	default:
		k, kerr := tg.Compiled.KeyMembers(r.Payload)
		switch {
		case kerr != nil:
			m.dead = append(m.dead, r.Offset)
		case !tg.Compiled.MatchMembers(r.Payload):
			m.filtered++
		default:
			b, err := tg.Compiled.ProjectMembers(r.Payload)
			if err != nil {
				m.dead = append(m.dead, r.Offset)
				break
			}
			key, value, keep = k, string(b), true
		}
	}
	if r.Key == "" {
		return // no source key: nothing is owned or written
	}
	if old, ok := m.index[r.Key]; ok && (!keep || old.Key != key) && m.store[old.Key].version == old.Version {
		m.store[old.Key] = cell{version: v, deleted: true} // freed: a tombstone
		m.deletes++
	}
	if !keep {
		delete(m.index, r.Key)
		return
	}
	m.store[key] = cell{version: v, value: value}
	m.sets++
	m.index[r.Key] = ledger.Entry{Key: key, Version: v}
}

// randomWorld is a prior state over few source and projected keys, so that
// records collide: entries that still own their key, entries whose key
// another source took over since, entries whose key is gone, and values
// nobody's entry points to. Every version is at most maxVersion.
func randomWorld(rnd *rand.Rand, maxVersion int64) world {
	w := world{store: map[string]cell{}, index: map[string]ledger.Entry{}}
	pk := func() string { return "e" + strconv.Itoa(rnd.IntN(10)) + "@x.io" }
	ver := func() int64 { return 1 + rnd.Int64N(maxVersion) }
	for range rnd.IntN(8) {
		w.store[pk()] = cell{version: ver(), deleted: rnd.IntN(4) == 0, value: "old"}
	}
	for i := range 8 {
		if rnd.IntN(3) == 0 {
			continue
		}
		e := ledger.Entry{Key: pk(), Version: ver()}
		w.index["s"+strconv.Itoa(i)] = e
		switch rnd.IntN(3) {
		case 0: // still owns it
			w.store[e.Key] = cell{version: e.Version, value: "owned"}
		case 1: // taken over since, or a tombstone
			w.store[e.Key] = cell{version: min(e.Version+1+rnd.Int64N(5), maxVersion), deleted: rnd.IntN(2) == 0, value: "taken"}
		}
	}
	return w
}

// randomRecords are n records from offset from: upserts (often re-keying),
// records the filter rejects, records missing the key field, tombstones,
// undecodable records, and rarely one without a key.
func randomRecords(rnd *rand.Rand, from int64, n int) []feed.Record {
	recs := make([]feed.Record, n)
	for i := range recs {
		src := "s" + strconv.Itoa(rnd.IntN(8))
		email := "e" + strconv.Itoa(rnd.IntN(10)) + "@x.io"
		r := feed.Record{Offset: from + int64(i), Topic: "t", Key: src}
		switch x := rnd.IntN(100); {
		case x < 10:
			r.Delete = true
		case x < 17:
			r.Err = fmt.Errorf("decode: %w", projection.ErrPayload)
		case x < 22:
			r.Payload = members(src, "", "active") // missing key field
		case x < 32:
			r.Payload = members(src, email, "blocked") // filtered out
		case x < 34:
			r.Key = ""
			r.Err = fmt.Errorf("decode: %w", events.ErrMalformedRecord)
		default:
			r.Payload = members(src, email, "active")
		}
		recs[i] = r
	}
	return recs
}

// TestPlanMatchesModel is the planner's property test: random batches over
// a random prior index and store, planned in one piece (the transactional
// path) or cut into consecutive plans where each is planned while the ones
// before are pending (the Cluster pipeline: their values written or not,
// their bookkeeping not committed, overlaid by readState). Writing every
// plan's values and bookkeeping must leave the store (values, tombstones of
// freed keys, versions) and the index exactly as the model computes, with
// one dead letter per unusable record in offset order and the counts the
// model sees.
func TestPlanMatchesModel(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 17))
	tg := planTarget(t)
	const base = 1000 // first offset of a batch; prior versions are at most base
	for iter := range 3000 {
		prior := randomWorld(rnd, base)
		recs := randomRecords(rnd, base, rnd.IntN(40))

		want := &model{world: prior.clone()}
		for i := range recs {
			want.apply(tg, &recs[i])
		}

		// Cut the batch into plans; plan i sees the world as the plans
		// before it left it: the first `committed` written and committed,
		// the next `valued` with their values written only, the rest
		// pending (pending is every plan not committed).
		cuts := []int{0, len(recs)}
		overlaid := rnd.IntN(2) == 0
		if overlaid {
			for range rnd.IntN(4) {
				cuts = append(cuts, rnd.IntN(len(recs)+1))
			}
			slices.Sort(cuts)
		}
		got := prior.clone() // got.index stays prior until the end; see commits
		var plans []*Plan
		committed, valued := 0, 0
		for c := 0; c+1 < len(cuts); c++ {
			// Commits and value writes follow plan order; values come
			// before their commit.
			committed += rnd.IntN(len(plans) - committed + 1)
			for upTo := max(valued, committed) + rnd.IntN(len(plans)-max(valued, committed)+1); valued < upTo; valued++ {
				got.writeValues(t, plans[valued])
			}
			seen := got.clone()
			for _, p := range plans[:committed] {
				seen.commit(p)
			}
			part := recs[cuts[c]:cuts[c+1]]
			outs := projectAll(tg, part)
			src := groupSources(outs)
			st, err := readState(outs, &src, plans[committed:], seen.indexReader(), seen.versionReader())
			if err != nil {
				t.Fatal(err)
			}
			next := base + int64(cuts[c+1])
			p := planBatch(tg, outs, &src, st, next, overlaid)
			if p.Next() != next {
				t.Fatalf("iteration %d: plan commits offset %d, want %d", iter, p.Next(), next)
			}
			plans = append(plans, p)
		}
		// Everything lands, in order.
		for ; valued < len(plans); valued++ {
			got.writeValues(t, plans[valued])
		}
		var dead []int64
		var stats Stats
		for _, p := range plans {
			for _, d := range got.commit(p).Dead {
				dead = append(dead, d.Offset)
			}
			stats.Sets += p.Stats().Sets
			stats.Deletes += p.Stats().Deletes
			stats.Filtered += p.Stats().Filtered
			stats.DeadLetters += p.Stats().DeadLetters
		}

		if !maps.Equal(got.store, want.store) {
			t.Fatalf("iteration %d (%d plans): store\n got  %v\n want %v\nprior %v %v\nrecords %+v", iter, len(plans), got.store, want.store, prior.store, prior.index, recs)
		}
		if !maps.Equal(got.index, want.index) {
			t.Fatalf("iteration %d (%d plans): index\n got  %v\n want %v\nprior %v %v\nrecords %+v", iter, len(plans), got.index, want.index, prior.store, prior.index, recs)
		}
		if !slices.Equal(dead, want.dead) || stats.DeadLetters != len(want.dead) {
			t.Fatalf("iteration %d: dead letters at %v (counted %d), want %v", iter, dead, stats.DeadLetters, want.dead)
		}
		if stats.Filtered != want.filtered {
			t.Fatalf("iteration %d: %d filtered, want %d", iter, stats.Filtered, want.filtered)
		}
		if stats.Sets != want.sets || stats.Deletes != want.deletes {
			t.Fatalf("iteration %d: %d sets and %d deletes sent, want %d and %d", iter, stats.Sets, stats.Deletes, want.sets, want.deletes)
		}
	}
}

// TestPlanReadsVersionsOnlyForDepartures: a batch where no source key
// leaves a key it owns (a first load, updates that keep their keys) reads
// no versions and keeps no written map (nothing to delete).
func TestPlanReadsVersionsOnlyForDepartures(t *testing.T) {
	t.Parallel()
	tg := planTarget(t)
	prior := world{store: map[string]cell{"a@x.io": {version: 5}}, index: map[string]ledger.Entry{"s1": {Key: "a@x.io", Version: 5}}}
	recs := []feed.Record{
		{Offset: 10, Key: "s1", Payload: members("s1", "a@x.io", "active")}, // keeps its key
		{Offset: 11, Key: "s2", Payload: members("s2", "b@x.io", "active")}, // new
	}
	outs := projectAll(tg, recs)
	src := groupSources(outs)
	reads := 0
	st, err := readState(outs, &src, nil, prior.indexReader(), func(keys []string) ([]int64, error) {
		reads++
		return prior.versionReader()(keys)
	})
	if err != nil {
		t.Fatal(err)
	}
	p := planBatch(tg, outs, &src, st, 12, false)
	if reads != 0 || p.written != nil {
		t.Errorf("versions read %d times, written map %v; want none", reads, p.written)
	}
	if p.Stats().Sets != 2 || p.Stats().Deletes != 0 {
		t.Errorf("stats %+v, want 2 sets and no delete", p.Stats())
	}
	// s1 moves to c@x.io: now a@x.io's version is needed, and read once.
	recs[0].Payload = members("s1", "c@x.io", "active")
	outs = projectAll(tg, recs)
	src = groupSources(outs)
	if st, err = readState(outs, &src, nil, prior.indexReader(), func(keys []string) ([]int64, error) {
		reads++
		if !slices.Equal(keys, []string{"a@x.io"}) {
			t.Errorf("versions read for %v, want [a@x.io]", keys)
		}
		return prior.versionReader()(keys)
	}); err != nil {
		t.Fatal(err)
	}
	p = planBatch(tg, outs, &src, st, 12, false)
	if reads != 1 || p.Stats().Deletes != 1 {
		t.Errorf("versions read %d times, %d deletes; want 1 and 1", reads, p.Stats().Deletes)
	}
}

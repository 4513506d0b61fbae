package projector

import (
	"cmp"
	"errors"
	"slices"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Planning: what a batch does to a generation, decided without I/O from the
// batch's records and the State read for it (state.go).

// Reason classes of dead letters (the metric label).
const (
	ReasonMalformed   = "malformed_record" // envelope/headers invalid
	ReasonNotJSON     = "payload_not_json" // payload is not a JSON object
	ReasonMissingKey  = "missing_key_field"
	ReasonBadKey      = "bad_key_field" // not a scalar, too long, empty
	ReasonRefused     = "refused_by_publisher"
	ReasonProjectFail = "project_failed"
)

// ReasonClass maps a record error to its metric label.
func ReasonClass(err error) string {
	switch {
	case errors.Is(err, projection.ErrPayload):
		return ReasonNotJSON
	case errors.Is(err, events.ErrMalformedRecord):
		var re *events.RecordError
		if errors.As(err, &re) && re.Part == "value" {
			return ReasonNotJSON
		}
		return ReasonMalformed
	case errors.Is(err, projection.ErrMissingField):
		return ReasonMissingKey
	case errors.Is(err, projection.ErrNotScalar), errors.Is(err, projection.ErrEmptyKey):
		return ReasonBadKey
	case errors.Is(err, distcache.ErrValueTooLarge), errors.Is(err, distcache.ErrInvalidKey):
		return ReasonRefused
	}
	return ReasonProjectFail
}

// outcome is what one record means for one generation.
type outcome struct {
	rec    *feed.Record
	remove bool   // the source key owns nothing after this record
	key    string // projected key (when !remove)
	value  []byte
	dead   error // dead-letter reason, with remove
	// filtered: the filter rejected the record (with remove)
	filtered bool
}

// project renders r for t.
func project(t Target, r *feed.Record) outcome {
	o := outcome{rec: r}
	switch {
	case r.Err != nil:
		o.remove, o.dead = true, r.Err
	case r.Delete:
		o.remove = true
	default:
		key, err := t.Compiled.KeyMembers(r.Payload)
		if err != nil {
			o.remove, o.dead = true, err
			return o
		}
		if !t.Compiled.MatchMembers(r.Payload) {
			o.remove, o.filtered = true, true
			return o
		}
		val, err := t.Compiled.ProjectMembers(r.Payload)
		if err != nil {
			o.remove, o.dead = true, err
			return o
		}
		o.key, o.value = key, val
	}
	return o
}

// projectAll projects every record of a batch.
func projectAll(t Target, recs []feed.Record) []outcome {
	outs := make([]outcome, len(recs))
	for i := range recs {
		outs[i] = project(t, &recs[i])
	}
	return outs
}

// sources are a batch's source keys: one slot per key, in the order the
// batch first meets them.
type sources struct {
	keys []string
	pos  map[string]int32 // source key → its slot
	of   []int32          // record i's slot; -1: the record has no key
	// repeated: some source key has more than one record in the batch.
	repeated bool
}

// groupSources finds the source keys of a projected batch.
func groupSources(outs []outcome) sources {
	src := sources{
		keys: make([]string, 0, len(outs)),
		pos:  make(map[string]int32, len(outs)),
		of:   make([]int32, len(outs)),
	}
	for i := range outs {
		k := outs[i].rec.Key
		if k == "" {
			src.of[i] = -1
			continue
		}
		j, ok := src.pos[k]
		if ok {
			src.repeated = true
		} else {
			j = int32(len(src.keys))
			src.pos[k] = j
			src.keys = append(src.keys, k)
		}
		src.of[i] = j
	}
	return src
}

// State is what a batch's plan depends on besides its records.
type State struct {
	// Index is the index entry of each source key of the batch before it,
	// in the order of the batch's sources (the zero Entry: owns nothing).
	Index []ledger.Entry
	// Versions is the version each projected key in departures holds now
	// (0: absent, or not a distcache value); nil when there are none.
	Versions map[string]int64
	// Base is the generation's version base: a record at offset o writes
	// with version Base + o + 1 (see package rebuild).
	Base int64
}

// departures are the projected keys the batch may delete without having
// written them first, each mapped to 0 (nil when there are none): the key
// a source key owns before the batch, when its first record in the batch
// leaves it (a re-key, a tombstone, a filtered or unprojectable record).
// Its later records can only leave keys the batch itself wrote. A delete
// needs the key's current version (Ownership in the package doc).
func departures(outs []outcome, src *sources, index []ledger.Entry) map[string]int64 {
	var keys map[string]int64
	met := make([]bool, len(src.keys))
	for i := range outs {
		j := src.of[i]
		if j < 0 || met[j] {
			continue
		}
		met[j] = true
		old, o := index[j], &outs[i]
		if old.Key == "" || (!o.remove && o.key == old.Key) {
			continue
		}
		if keys == nil {
			keys = map[string]int64{}
		}
		keys[old.Key] = 0
	}
	return keys
}

// Plan is one batch of one generation, decided and ready to write: the
// value changes, and the index entries, dead letters and offset to commit
// with or after them.
type Plan struct {
	t       Target
	claim   string // the writer claim the plan was checked under (Cluster: its commit checks it again)
	changes []distcache.Change
	origin  []*feed.Record // the record of each change
	dead    []ledger.DeadLetter
	// slots holds the index entry of every source key the batch touches,
	// before and after it, in the order the batch first meets them; pos
	// finds a source key's slot.
	slots []slot
	pos   map[string]int32
	// written: projected key → version of the batch's last write to it.
	// It is kept only where a delete can need it, and for plans that later
	// plans overlay (the Cluster pipeline, see state.go).
	written map[string]int64
	next    int64
	base    int64  // State.Base
	epoch   string // the generation's epoch as read when planned (Cluster; mark.go)
	stats   Stats
}

// slot is one source key's index entry before and after a batch.
type slot struct {
	skey          string
	before, after ledger.Entry
}

// planBatch decides what the projected batch outs does to generation t,
// given st, the state read for it, and commits next as the generation's
// next offset. It is a pure function: no I/O, and outs, src and st are only
// read. overlaid keeps the written versions for later plans to overlay.
//
// Each record, in offset order: a source key that leaves the projected key
// it owns (re-key, tombstone, filtered, dead letter) deletes that key if it
// still holds the source key's write; an upsert sets its projected key and
// the source key now owns it; a record that cannot be projected is a dead
// letter.
func planBatch(t Target, outs []outcome, src *sources, st State, next int64, overlaid bool) *Plan {
	p := &Plan{t: t, next: next, base: st.Base, stats: Stats{Records: len(outs)}, pos: src.pos}
	p.slots = make([]slot, len(src.keys))
	for j, k := range src.keys {
		p.slots[j] = slot{skey: k, before: st.Index[j], after: st.Index[j]}
	}
	// Where every source key appears once and none leaves a projected key
	// (a first load, updates that keep their keys), no delete is possible
	// and no written map is needed.
	if overlaid || src.repeated || len(st.Versions) > 0 {
		p.written = make(map[string]int64, len(outs))
	}
	currentVersion := func(pk string) int64 {
		if v, ok := p.written[pk]; ok {
			return v
		}
		return st.Versions[pk]
	}
	p.changes = make([]distcache.Change, 0, len(outs)+8)
	p.origin = make([]*feed.Record, 0, len(outs)+8)
	for i := range outs {
		o := &outs[i]
		r := o.rec
		v := st.Base + Version(r.Offset)
		if o.filtered {
			p.stats.Filtered++
		}
		if o.dead != nil {
			p.deadLetter(r, o.dead)
		}
		if src.of[i] < 0 {
			continue
		}
		sl := &p.slots[src.of[i]]
		old := sl.after
		if old.Key != "" && (o.remove || old.Key != o.key) && currentVersion(old.Key) == old.Version {
			p.changes = append(p.changes, distcache.Change{Key: old.Key, Version: v, Op: distcache.OpDelete})
			p.origin = append(p.origin, r)
			if p.written != nil {
				p.written[old.Key] = v
			}
			p.stats.Deletes++
		}
		if o.remove {
			sl.after = ledger.Entry{}
			continue
		}
		p.changes = append(p.changes, distcache.Change{Key: o.key, Value: o.value, Version: v, Op: distcache.OpSet})
		p.origin = append(p.origin, r)
		if p.written != nil {
			p.written[o.key] = v
		}
		sl.after = ledger.Entry{Key: o.key, Version: v}
		p.stats.Sets++
	}
	return p
}

// Next is the offset the plan commits.
func (p *Plan) Next() int64 { return p.next }

// Stats is what the plan does (Applied and refusals are known once its
// values are written).
func (p *Plan) Stats() Stats { return p.stats }

// after is the index entry of source key k after the plan, if the plan
// touches k.
func (p *Plan) after(k string) (ledger.Entry, bool) {
	j, ok := p.pos[k]
	if !ok {
		return ledger.Entry{}, false
	}
	return p.slots[j].after, true
}

func (p *Plan) deadLetter(r *feed.Record, err error) {
	p.dead = append(p.dead, ledger.DeadLetter{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
		Version: p.base + Version(r.Offset), Key: r.Key, Reason: err.Error()})
	p.stats.DeadLetters++
	if p.stats.DeadReasons == nil {
		p.stats.DeadReasons = map[string]int{}
	}
	p.stats.DeadReasons[ReasonClass(err)]++
}

// results records the outcome of the plan's value writes: how many were
// applied, and a dead letter for each change the Publisher refused.
func (p *Plan) results(res []distcache.Result) {
	p.stats.Applied = 0
	for j, r := range res {
		if r.Applied {
			p.stats.Applied++
		}
		if r.Err != nil && !p.refused(p.origin[j]) {
			p.deadLetter(p.origin[j], r.Err)
		}
	}
}

// refused reports whether r already has a dead letter (a repeated Apply).
func (p *Plan) refused(r *feed.Record) bool {
	for _, d := range p.dead {
		if d.Offset == r.Offset {
			return true
		}
	}
	return false
}

// commit is the bookkeeping the plan leaves once its values are written:
// the index entries that changed, the dead letters (in offset order, as
// their stream ids must grow) and the next offset.
func (p *Plan) commit() ledger.Commit {
	dead := slices.Clone(p.dead)
	slices.SortFunc(dead, func(a, b ledger.DeadLetter) int { return cmp.Compare(a.Offset, b.Offset) })
	c := ledger.Commit{Dead: dead, Next: p.next}
	for _, sl := range p.slots {
		switch {
		case sl.after == sl.before:
		case sl.after.Key == "":
			c.Delete = append(c.Delete, sl.skey)
			c.DeleteBefore = append(c.DeleteBefore, sl.before)
		default:
			c.Set = append(c.Set, ledger.SourceEntry{Source: sl.skey, Entry: sl.after})
		}
	}
	return c
}

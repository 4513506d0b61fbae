package distcache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Health of a projection's local copy, from the tail's contact with Redis.
const (
	healthFresh   int32 = iota // in contact: local entries are current
	healthStale                // contact lost, within the staleness bound: serve, mark Stale
	healthExpired              // past the staleness bound: do not serve local entries
)

const (
	numStripes  = 256  // write locks, by key hash
	recentSlots = 8192 // must be a multiple of numStripes
)

type stripe struct {
	sync.Mutex
	// buf is where entries stored under this lock are built: bigcache
	// copies what it stores, so a fill or an update allocates no entry.
	buf []byte
	// flights: the misses in flight of this stripe's keys (made on first
	// use). Under the stripe lock, which a miss takes anyway to store what
	// it fetched: concurrent misses of different keys meet on no common
	// lock (a projection-wide one made 32 goroutines queue twice per miss).
	flights   map[string]flight
	flightSeq uint64
	_         [16]byte
}

// stripeBufMax bounds the scratch a stripe keeps: a larger entry's buffer
// is dropped after use rather than pinned.
const stripeBufMax = 4 << 10

// keep makes b, the entry just built, the stripe's scratch for the next one.
func (s *stripe) keep(b []byte) {
	if cap(b) > stripeBufMax {
		b = nil
	}
	s.buf = b
}

// recentSlot remembers the newest version the tail saw for a key hash, so
// that a fill read from a lagging replica does not store a value older than a
// change already seen (and skipped because the key was not held).
type recentSlot struct {
	hash    uint64
	version int64
}

// stripedCounter is a counter for the hot path, spread over cache lines.
type stripedCounter struct {
	c [8]struct {
		n atomic.Uint64
		_ [56]byte
	}
}

func (s *stripedCounter) inc() { s.c[rand.Uint32()&7].n.Add(1) }

func (s *stripedCounter) load() uint64 {
	var t uint64
	for i := range s.c {
		t += s.c[i].n.Load()
	}
	return t
}

// flight is one in-flight miss fetch of a key, held by value in its
// stripe's flights (guarded by the stripe lock): an uncontended miss
// allocates nothing to coalesce. id tells the fetching miss's flight from a later one
// of the same key.
type flight struct {
	id uint64
	// A change the tail saw for this key while the fetch was in flight.
	pushed        bool
	pushedDelete  bool
	pushedVersion int64
	pushedValue   string
	// wait is made by the first concurrent miss of the key that waits for
	// this fetch, and shared by every later one.
	wait *flightWait
}

// flightWait is where a fetch publishes its result to the misses waiting
// for it.
type flightWait struct {
	done  chan struct{}
	entry Entry // Value is the waiters' (each copies it), not the fetcher's
	err   error
}

// flightRef is the fetching miss's hold on its flight: fill takes the flight
// out of the map (taking its waiters along) when it stores a value, and
// finish otherwise.
type flightRef struct {
	id      uint64
	removed bool
	wait    *flightWait
}

type projection struct {
	c      *Client
	name   string
	limits Limits

	store       atomic.Pointer[store] // nil while the projection has no live generation
	health      atomic.Int32
	connected   atomic.Bool
	lastContact atomic.Int64 // unix nanos of the tail's last successful call
	wantCompact atomic.Bool

	stripes [numStripes]stripe
	recent  [recentSlots]recentSlot // slot i is guarded by stripe i%numStripes

	// Tail state, owned by the tail goroutine.
	streamPos string
	ctrlPos   string

	// Stats.
	hits, staleServes                   stripedCounter
	misses, negHits, fetchErrors        atomic.Uint64
	updates, gaps, replays, fills, seen atomic.Uint64
	evictTTL, evictBytes, evictItems    atomic.Uint64
	lagNanos                            atomic.Int64
	cutovers, rebuilds, compactions     atomic.Uint64
	deletes                             atomic.Uint64 // delete events that dropped the local store
	reconnects                          atomic.Uint64 // tail contact restored after a loss
	fetchLatency                        latencyHist   // Redis fetches of misses (success or not)
	unknownEntries                      atomic.Uint64 // change-stream entries of an unknown form
	// Tail goroutine only: an unreadable change-stream entry asks for a
	// revalidation; loggedForms remembers the unknown forms already logged.
	revalidate  bool
	loggedForms map[int]bool

	// Snapshots (WithSnapshot, snapshotfile.go). resuming: the store was
	// loaded from a snapshot and the tail has not caught up yet (reads are
	// Stale). prerollPending and fromSnapshot are set before the tail starts;
	// the tail owns prerollPending.
	snap            atomic.Pointer[snapState]
	resuming        atomic.Bool
	prerollPending  bool
	fromSnapshot    bool
	snapWrites      atomic.Uint64
	snapWriteErrors atomic.Uint64
	snapBytes       atomic.Int64
	snapLoaded      atomic.Uint64
	snapRejects     [numSnapshotRejectReasons]atomic.Uint64

	// The tail's node (tailnode.go), tail goroutine only: the primary, or the
	// replica replicaIdx (-1: none) while onReplica. replicaAt: when to try
	// the replica again; behindSince: since when the replica has been found
	// behind the tail's positions (zero: it is not). tailReplica and
	// tailFallbacks are for Stats.
	node          redis.UniversalClient
	onReplica     bool
	replicaIdx    int
	replicaAt     time.Time
	behindSince   time.Time
	tailReplica   atomic.Bool
	tailFallbacks atomic.Uint64

	// Loss of Redis's data (loss.go). lossSince (unix nanos, 0: no loss) and
	// pendingCount are read by any goroutine; the rest is the tail's.
	// pointerSeen: the pointer was there at the tail's last look; verifyAt:
	// when the tail next checks that the pointer and stream still exist;
	// runID, runIDAt, needRunID: the primary's run_id and when to read it
	// again. pending: held keys Redis has not given back yet, with their held
	// versions.
	lossSince       atomic.Int64
	losses          [numLossReasons]atomic.Uint64
	pendingCount    atomic.Int64
	pointerSeen     bool
	verifyAt        time.Time
	runID           string
	runIDAt         time.Time
	needRunID       bool
	runIDRefused    bool // INFO is refused (logged once)
	pending         map[string]int64
	lossRevalidated bool // the held keys were refetched since the pointer came back
	lossFinal       bool // the loss grace is over: absent keys are dropped
	lossRetryAt     time.Time
	lossBackoff     time.Duration
	lossDropped     int
}

func newProjection(c *Client, name string) *projection {
	p := &projection{c: c, name: name}
	p.node, p.replicaIdx, p.needRunID = c.cfg.primary, c.pickReplica(name), true
	p.limits = Limits{MaxTTL: c.cfg.global.MaxTTL}
	if pc, ok := c.cfg.projections[name]; ok && pc.hasLimits {
		p.limits = pc.limits
		if p.limits.MaxTTL == 0 {
			p.limits.MaxTTL = c.cfg.global.MaxTTL
		}
	}
	return p
}

func (p *projection) stripe(h uint64) *stripe { return &p.stripes[h%numStripes] }

func (p *projection) recentVersion(h uint64) int64 {
	s := &p.recent[h%recentSlots]
	if s.hash == h {
		return s.version
	}
	return 0
}

func (p *projection) recordRecent(h uint64, version int64) {
	s := &p.recent[h%recentSlots]
	if s.hash == h && s.version >= version {
		return
	}
	s.hash, s.version = h, version
}

// localHit interprets a local entry. hit false means "treat as a miss"
// (expired negative entry, or past the staleness bound).
func (p *projection) localHit(raw []byte) (value []byte, found, hit bool) {
	h := p.health.Load()
	if h == healthExpired {
		return nil, false, false
	}
	if entryNegative(raw) {
		if time.Now().UnixNano() >= negExpiry(raw) {
			return nil, false, false
		}
		p.negHits.Add(1)
		return nil, false, true
	}
	p.hits.inc()
	if h != healthFresh {
		p.staleServes.inc()
	}
	return raw[entryHeaderLen:], true, true
}

func (p *projection) fetchCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	d := p.c.cfg.fetchTimeout
	if d == 0 {
		return ctx, func() {}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

func validateKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes (want 1..%d)", ErrInvalidKey, len(key), MaxKeyLen)
	}
	return nil
}

func (p *projection) unavailable(key string, err error) error {
	return fmt.Errorf("get %s/%s: %w: %w", p.name, key, ErrUnavailable, err)
}

// miss reads key from Redis, sharing one fetch among concurrent misses.
// It makes one call to one node (a replica while one answers): the value
// key's GET, nothing else.
func (p *projection) miss(ctx context.Context, key string) (Entry, error) {
	if err := validateKey(key); err != nil {
		return Entry{}, err
	}
	st := p.store.Load()
	if st == nil {
		return Entry{}, fmt.Errorf("get %s/%s: %w", p.name, key, ErrNoGeneration)
	}
	p.misses.Add(1)
	h := hashKey(key)
	s := p.stripe(h)
	s.Lock()
	ref, w := s.beginFlight(key)
	s.Unlock()
	if w != nil {
		return waitFlight(ctx, w)
	}

	fctx, cancel := p.fetchCtx(ctx)
	t0 := time.Now()
	raw, found, err := p.c.reader.fetchOne(fctx, st.prefix, key)
	p.fetchLatency.observe(time.Since(t0))
	cancel()
	if err != nil {
		p.fetchErrors.Add(1)
		err = p.unavailable(key, err)
		p.finish(s, key, &ref, Entry{}, err)
		return Entry{}, err
	}
	e, err := p.fill(st, key, h, raw, found, &ref, true)
	p.finish(s, key, &ref, e, err)
	return e, err
}

// beginFlight registers a fetch of key (whose stripe s is), or joins the
// one in flight (w not nil: wait on it). The caller holds s.
func (s *stripe) beginFlight(key string) (ref flightRef, w *flightWait) {
	if f, ok := s.flights[key]; ok {
		if f.wait == nil {
			f.wait = &flightWait{done: make(chan struct{})}
			s.flights[key] = f
		}
		return flightRef{}, f.wait
	}
	if s.flights == nil {
		s.flights = map[string]flight{}
	}
	s.flightSeq++
	s.flights[key] = flight{id: s.flightSeq}
	return flightRef{id: s.flightSeq}, nil
}

// takeFlight removes ref's flight from s's map, keeping its waiters, and
// returns it. The caller holds s.
func (s *stripe) takeFlight(key string, ref *flightRef) (flight, bool) {
	if ref.removed {
		return flight{}, false
	}
	f, ok := s.flights[key]
	if !ok || f.id != ref.id {
		return flight{}, false
	}
	delete(s.flights, key)
	ref.removed, ref.wait = true, f.wait
	return f, true
}

func waitFlight(ctx context.Context, w *flightWait) (Entry, error) {
	select {
	case <-w.done:
		e := w.entry
		if e.Value != nil {
			e.Value = append([]byte(nil), e.Value...) // each caller owns its copy
		}
		return e, w.err
	case <-ctx.Done():
		return Entry{}, fmt.Errorf("get: %w: %w", ErrUnavailable, ctx.Err())
	}
}

// finish ends a fetch: its flight leaves the map (unless fill took it) and
// the misses that waited for it get the result, with a value of their own
// (the fetcher's e.Value is its caller's, who may write to it).
func (p *projection) finish(s *stripe, key string, ref *flightRef, e Entry, err error) {
	if !ref.removed { // fill took it (the usual case): no lock needed
		s.Lock()
		s.takeFlight(key, ref)
		s.Unlock()
	}
	if w := ref.wait; w != nil {
		if e.Value != nil {
			e.Value = append([]byte(nil), e.Value...)
		}
		w.entry, w.err = e, err
		close(w.done)
	}
}

// fill stores what a miss fetched (raw, or absent when !found) into st,
// unless a newer version is already known, and returns what the caller
// gets. h is hashKey(key). ref may be nil (warm start). owned: raw's bytes are the caller's to
// keep (a reply go-redis handed over as []byte), so the returned Value is a
// slice of them; otherwise the Value is a copy.
func (p *projection) fill(st *store, key string, h uint64, raw []byte, found bool, ref *flightRef, owned bool) (Entry, error) {
	var (
		version int64
		deleted = !found
		payload []byte
	)
	if found {
		v, op, pl, err := decodeValue(raw)
		if err != nil {
			return Entry{}, fmt.Errorf("get %s/%s: %w", p.name, key, err)
		}
		version, deleted, payload = v, op == opDelete, pl
	}
	if !deleted && len(payload) > p.c.cfg.maxValue {
		return Entry{}, fmt.Errorf("get %s/%s: %w: %d bytes > %d", p.name, key, ErrValueTooLarge, len(payload), p.c.cfg.maxValue)
	}
	s := p.stripe(h)
	s.Lock()
	defer s.Unlock()
	store := true
	if ref != nil {
		f, ok := s.takeFlight(key, ref)
		if ok && f.pushed && f.pushedVersion >= version {
			// A change arrived while the fetch was in flight: the fetched
			// value is not stored; the pushed one is at least as new.
			version, deleted = f.pushedVersion, f.pushedDelete
			payload, owned = []byte(f.pushedValue), true
		}
	}
	if p.recentVersion(h) > version {
		store = false // a lagging replica answered; keep nothing
	}
	if !found && version == 0 && p.inLoss() {
		// An absence read from a Redis that lost its data is not an answer:
		// a held value stays (served stale within the staleness bound), and
		// nothing is remembered as absent.
		if old, ok := st.get(key); ok && !entryNegative(old) && p.health.Load() != healthExpired {
			return Entry{Value: old[entryHeaderLen:], Version: entryVersion(old), Found: true, Stale: true}, nil
		}
		return Entry{}, p.lostData(key)
	}
	if store {
		old, ok := st.get(key)
		var entry []byte
		switch {
		case ok && entryVersion(old) > version:
			// Filled or updated meanwhile with something newer: use it.
			if entryNegative(old) {
				return Entry{}, notFound(p.name, key)
			}
			return Entry{Value: old[entryHeaderLen:], Version: entryVersion(old), Found: true,
				Stale: p.health.Load() != healthFresh}, nil
		case deleted:
			if ttl := p.c.cfg.negativeTTL; ttl > 0 {
				entry = appendNegative(s.buf, version, time.Now().Add(ttl).UnixNano())
			} else if ok {
				entry = appendNegative(s.buf, version, 0) // replace the stale entry; expired at once
			}
		default:
			entry = appendPositive(s.buf, version, payload)
		}
		if entry != nil {
			if !ok {
				old = nil
			}
			if err := st.put(key, h, entry, old); err != nil {
				p.c.log.Debug("distcache: local store", "err", err)
			} else {
				p.fills.Add(1)
			}
			s.keep(entry)
		}
	}
	if deleted {
		return Entry{}, notFound(p.name, key)
	}
	if !owned {
		payload = append(make([]byte, 0, len(payload)), payload...)
	}
	return Entry{Value: payload, Version: version, Found: true}, nil
}

// missMany fetches the keys at idx in one round trip (per node) and fills
// out.
func (p *projection) missMany(ctx context.Context, keys []string, idx []int, out []Entry) error {
	st := p.store.Load()
	if st == nil {
		return fmt.Errorf("get %s: %w", p.name, ErrNoGeneration)
	}
	for _, i := range idx {
		if err := validateKey(keys[i]); err != nil {
			return err
		}
	}
	type owned struct {
		i   int
		ref flightRef
	}
	type waiter struct {
		i int
		w *flightWait
	}
	var own []owned
	var others []waiter
	for _, i := range idx {
		s := p.stripe(hashKey(keys[i]))
		s.Lock()
		ref, w := s.beginFlight(keys[i])
		s.Unlock()
		if w != nil {
			others = append(others, waiter{i, w})
			continue
		}
		own = append(own, owned{i, ref})
	}
	p.misses.Add(uint64(len(idx)))

	var firstErr error
	if len(own) > 0 {
		rkeys := make([]string, len(own))
		for j, w := range own {
			rkeys[j] = st.valueKey(keys[w.i])
		}
		fctx, cancel := p.fetchCtx(ctx)
		t0 := time.Now()
		vals, found, err := p.c.reader.fetch(fctx, rkeys)
		p.fetchLatency.observe(time.Since(t0))
		cancel()
		if err != nil {
			p.fetchErrors.Add(1)
			firstErr = p.unavailable(fmt.Sprintf("(%d keys)", len(own)), err)
			for j := range own {
				k := keys[own[j].i]
				p.finish(p.stripe(hashKey(k)), k, &own[j].ref, Entry{}, firstErr)
			}
		} else {
			for j := range own {
				w := &own[j]
				h := hashKey(keys[w.i])
				e, err := p.fill(st, keys[w.i], h, stringBytes(vals[j]), found[j], &w.ref, false)
				p.finish(p.stripe(h), keys[w.i], &w.ref, e, err)
				if err == nil {
					out[w.i] = e
				} else if !errors.Is(err, ErrNotFound) && firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	for _, w := range others {
		e, err := waitFlight(ctx, w.w)
		if err == nil {
			out[w.i] = e
		} else if !errors.Is(err, ErrNotFound) && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// applyChange applies one change-stream entry to st: in place when the key
// is held and the version is newer; otherwise it only marks an in-flight
// fetch of the key and remembers the version. It reports whether it updated
// a held entry.
func (p *projection) applyChange(st *store, key string, version int64, op byte, payload string) bool {
	h := hashKey(key)
	s := p.stripe(h)
	s.Lock()
	defer s.Unlock()
	p.recordRecent(h, version)
	if p.pending != nil {
		p.settlePending(key, version)
	}
	if old, ok := st.get(key); ok {
		if entryVersion(old) >= version {
			return false
		}
		var e []byte
		switch {
		case op == opDelete:
			e = appendNegative(s.buf, version, time.Now().Add(p.c.cfg.negativeTTL).UnixNano())
		case len(payload) > p.c.cfg.maxValue:
			e = appendNegative(s.buf, version, 0) // not cacheable: the next Get re-reads and reports it
		default:
			e = appendPositive(s.buf, version, payload)
		}
		err := st.put(key, h, e, old)
		if err == nil {
			p.updates.Add(1)
		}
		s.keep(e)
		return err == nil
	}
	if f, ok := s.flights[key]; ok && (!f.pushed || version > f.pushedVersion) {
		f.pushed, f.pushedVersion, f.pushedDelete, f.pushedValue = true, version, op == opDelete, payload
		s.flights[key] = f
	}
	return false
}

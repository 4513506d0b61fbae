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
	_ [56]byte
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

// call is one in-flight miss fetch, shared by concurrent misses of a key.
type call struct {
	done  chan struct{}
	entry Entry
	err   error

	// A change the tail saw for this key while the fetch was in flight.
	pushed        bool
	pushedVersion int64
	pushedDelete  bool
	pushedValue   string
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

	flightMu sync.Mutex
	flights  map[string]*call

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
	p := &projection{c: c, name: name, flights: map[string]*call{}}
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
func (p *projection) miss(ctx context.Context, key string) (Entry, error) {
	if err := validateKey(key); err != nil {
		return Entry{}, err
	}
	st := p.store.Load()
	if st == nil {
		return Entry{}, fmt.Errorf("get %s/%s: %w", p.name, key, ErrNoGeneration)
	}
	p.misses.Add(1)
	p.flightMu.Lock()
	if cl, ok := p.flights[key]; ok {
		p.flightMu.Unlock()
		return waitCall(ctx, cl)
	}
	cl := &call{done: make(chan struct{})}
	p.flights[key] = cl
	p.flightMu.Unlock()

	fctx, cancel := p.fetchCtx(ctx)
	t0 := time.Now()
	raw, found, err := p.c.reader.fetchOne(fctx, ValueKey(p.name, st.gen, key))
	p.fetchLatency.observe(time.Since(t0))
	cancel()
	if err != nil {
		p.fetchErrors.Add(1)
		err = p.unavailable(key, err)
		p.finish(key, cl, Entry{}, err)
		return Entry{}, err
	}
	e, err := p.fill(st, key, raw, found, cl)
	p.finish(key, cl, e, err)
	return e, err
}

func waitCall(ctx context.Context, cl *call) (Entry, error) {
	select {
	case <-cl.done:
		e := cl.entry
		if e.Value != nil {
			e.Value = append([]byte(nil), e.Value...) // each caller owns its copy
		}
		return e, cl.err
	case <-ctx.Done():
		return Entry{}, fmt.Errorf("get: %w: %w", ErrUnavailable, ctx.Err())
	}
}

// finish publishes a call's result and removes it from the in-flight map
// (fill already removed it under the stripe lock when it stored a value).
func (p *projection) finish(key string, cl *call, e Entry, err error) {
	p.flightMu.Lock()
	if p.flights[key] == cl {
		delete(p.flights, key)
	}
	p.flightMu.Unlock()
	cl.entry, cl.err = e, err
	close(cl.done)
}

// fill stores what a miss fetched (raw, or absent when !found) into st,
// unless a newer version is already known, and returns what the caller
// gets. cl may be nil (warm start).
func (p *projection) fill(st *store, key string, raw string, found bool, cl *call) (Entry, error) {
	var (
		version int64
		deleted = !found
		payload string
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
	h := hashKey(key)
	s := p.stripe(h)
	s.Lock()
	defer s.Unlock()
	store := true
	if cl != nil {
		p.flightMu.Lock()
		if p.flights[key] == cl {
			delete(p.flights, key)
		}
		pushed := cl.pushed && cl.pushedVersion >= version
		p.flightMu.Unlock()
		if pushed {
			// A change arrived while the fetch was in flight: the fetched
			// value is not stored; the pushed one is at least as new.
			version, deleted, payload = cl.pushedVersion, cl.pushedDelete, cl.pushedValue
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
	var entry []byte
	if store {
		old, ok := st.get(key)
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
				entry = makeNegative(version, time.Now().Add(ttl).UnixNano())
			} else if ok {
				entry = makeNegative(version, 0) // replace the stale entry; expired at once
			}
		default:
			entry = makePositiveString(version, payload)
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
		}
	}
	if deleted {
		return Entry{}, notFound(p.name, key)
	}
	var v []byte
	if entry != nil {
		v = entry[entryHeaderLen:]
	} else {
		v = []byte(payload)
	}
	return Entry{Value: v, Version: version, Found: true}, nil
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
	type waiter struct {
		i  int
		cl *call
	}
	var own, others []waiter
	p.flightMu.Lock()
	for _, i := range idx {
		if cl, ok := p.flights[keys[i]]; ok {
			others = append(others, waiter{i, cl})
			continue
		}
		cl := &call{done: make(chan struct{})}
		p.flights[keys[i]] = cl
		own = append(own, waiter{i, cl})
	}
	p.flightMu.Unlock()
	p.misses.Add(uint64(len(idx)))

	var firstErr error
	if len(own) > 0 {
		rkeys := make([]string, len(own))
		for j, w := range own {
			rkeys[j] = ValueKey(p.name, st.gen, keys[w.i])
		}
		fctx, cancel := p.fetchCtx(ctx)
		t0 := time.Now()
		vals, found, err := p.c.reader.fetch(fctx, rkeys)
		p.fetchLatency.observe(time.Since(t0))
		cancel()
		if err != nil {
			p.fetchErrors.Add(1)
			firstErr = p.unavailable(fmt.Sprintf("(%d keys)", len(own)), err)
			for _, w := range own {
				p.finish(keys[w.i], w.cl, Entry{}, firstErr)
			}
		} else {
			for j, w := range own {
				e, err := p.fill(st, keys[w.i], vals[j], found[j], w.cl)
				p.finish(keys[w.i], w.cl, e, err)
				if err == nil {
					out[w.i] = e
				} else if !errors.Is(err, ErrNotFound) && firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	for _, w := range others {
		e, err := waitCall(ctx, w.cl)
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
// fetch of the key and remembers the version.
func (p *projection) applyChange(st *store, key string, version int64, op byte, payload string) {
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
			return
		}
		var e []byte
		switch {
		case op == opDelete:
			e = makeNegative(version, time.Now().Add(p.c.cfg.negativeTTL).UnixNano())
		case len(payload) > p.c.cfg.maxValue:
			e = makeNegative(version, 0) // not cacheable: the next Get re-reads and reports it
		default:
			e = makePositiveString(version, payload)
		}
		if err := st.put(key, h, e, old); err == nil {
			p.updates.Add(1)
		}
		return
	}
	p.flightMu.Lock()
	if cl, ok := p.flights[key]; ok && (!cl.pushed || version > cl.pushedVersion) {
		cl.pushed, cl.pushedVersion, cl.pushedDelete, cl.pushedValue = true, version, op == opDelete, payload
	}
	p.flightMu.Unlock()
}

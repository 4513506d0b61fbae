package distcache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Op is the kind of a Change.
type Op uint8

const (
	// OpSet stores a value.
	OpSet Op = iota
	// OpDelete deletes a key, leaving a versioned tombstone.
	OpDelete
)

// String returns "set" or "delete".
func (o Op) String() string {
	switch o {
	case OpSet:
		return "set"
	case OpDelete:
		return "delete"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Change is one write of a batch given to Publisher.Apply.
type Change struct {
	Key     string
	Value   []byte // ignored for OpDelete
	Version int64  // > 0; monotonic per key
	Op      Op
}

// Result is the outcome of one Change of a batch, in the batch's order.
type Result struct {
	// Applied reports that this write changed the stored value. It is false
	// when the store already held this version or a newer one (a replay, a
	// redelivery, or an out-of-order write), which is not an error.
	Applied bool
	// Err is set when this change was refused (ErrValueTooLarge,
	// ErrInvalidKey, ErrInvalidVersion) or could not be written.
	Err error
}

// Publisher writes projections into Redis: version-guarded values, their
// change streams, the generation pointer and cutovers. It is safe for
// concurrent use. Cache-producers use it, and so may a core service that
// writes its projection directly.
type Publisher struct {
	rdb     redis.UniversalClient
	cluster *redis.ClusterClient // non-nil on Redis Cluster
	cfg     publisherConfig
}

type publisherConfig struct {
	streamMaxLen  int64
	maxValueBytes int
	tombstoneTTL  time.Duration
}

// PublisherOption configures a Publisher.
type PublisherOption func(*publisherConfig)

// DefaultStreamMaxLen is the default cap of a change stream.
const DefaultStreamMaxLen = 100_000

// DefaultMaxValueBytes is the default largest value, 1 MiB.
const DefaultMaxValueBytes = 1 << 20

// DefaultTombstoneTTL is how long a delete's tombstone is kept by default.
const DefaultTombstoneTTL = 24 * time.Hour

// WithStreamMaxLen caps each change stream at about n entries (XADD MAXLEN ~,
// approximate trimming); an entry holds one publish call's writes (up to 128
// changes of a batch). 0 means uncapped. Default DefaultStreamMaxLen.
// Clients further behind than the cap have a gap and revalidate.
func WithStreamMaxLen(n int64) PublisherOption {
	return func(c *publisherConfig) { c.streamMaxLen = n }
}

// WithPublisherMaxValueBytes refuses values larger than n bytes with
// ErrValueTooLarge. Default DefaultMaxValueBytes.
func WithPublisherMaxValueBytes(n int) PublisherOption {
	return func(c *publisherConfig) { c.maxValueBytes = n }
}

// WithTombstoneTTL sets how long a deleted key keeps its versioned tombstone,
// during which a write with an older version cannot resurrect it. Default
// DefaultTombstoneTTL. It must be longer than any redelivery window of the
// writer.
func WithTombstoneTTL(d time.Duration) PublisherOption {
	return func(c *publisherConfig) { c.tombstoneTTL = d }
}

// NewPublisher returns a Publisher writing through rdb: a *redis.Client (a
// standalone or replicated primary), a *redis.ClusterClient, or a
// *redis.Client made by redis.NewFailoverClient. Passwords, ACL users and TLS
// are whatever rdb was built with.
func NewPublisher(rdb redis.UniversalClient, opts ...PublisherOption) (*Publisher, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidOption)
	}
	cfg := publisherConfig{
		streamMaxLen:  DefaultStreamMaxLen,
		maxValueBytes: DefaultMaxValueBytes,
		tombstoneTTL:  DefaultTombstoneTTL,
	}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.streamMaxLen < 0:
		return nil, fmt.Errorf("%w: WithStreamMaxLen(%d) is negative", ErrInvalidOption, cfg.streamMaxLen)
	case cfg.maxValueBytes <= 0:
		return nil, fmt.Errorf("%w: WithPublisherMaxValueBytes(%d) must be > 0", ErrInvalidOption, cfg.maxValueBytes)
	case cfg.tombstoneTTL < time.Millisecond:
		return nil, fmt.Errorf("%w: WithTombstoneTTL(%v) must be >= 1ms", ErrInvalidOption, cfg.tombstoneTTL)
	}
	if _, ok := rdb.(*redis.Ring); ok {
		return nil, fmt.Errorf("%w: redis.Ring is not supported (use a Client or a ClusterClient)", ErrInvalidOption)
	}
	p := &Publisher{rdb: rdb, cfg: cfg}
	p.cluster, _ = rdb.(*redis.ClusterClient)
	return p, nil
}

// writeScript writes one value, guarded by version. KEYS[1] is the value
// key, KEYS[2] the stream key. ARGV: version (16 hex), op, payload, user key,
// stream maxlen (0: none), tombstone ttl ms, "1" to also append the stream
// entry. Returns 1 when applied, 2 when the same version is already stored, 0
// when a newer one is.
var writeScript = redis.NewScript(`
local cur = redis.call('GETRANGE', KEYS[1], 0, 15)
if string.len(cur) == 16 then
  if cur == ARGV[1] then return 2 end
  local ch = tonumber(string.sub(cur, 1, 8), 16)
  local cl = tonumber(string.sub(cur, 9, 16), 16)
  local nh = tonumber(string.sub(ARGV[1], 1, 8), 16)
  local nl = tonumber(string.sub(ARGV[1], 9, 16), 16)
  if ch and cl and (ch > nh or (ch == nh and cl > nl)) then return 0 end
end
local v = ARGV[1] .. ARGV[2] .. ARGV[3]
if ARGV[2] == 'd' then
  redis.call('SET', KEYS[1], v, 'PX', ARGV[6])
else
  redis.call('SET', KEYS[1], v)
end
if ARGV[7] == '1' then
  if ARGV[5] ~= '0' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', ARGV[4], v)
  else
    redis.call('XADD', KEYS[2], '*', ARGV[4], v)
  end
end
return 1
`)

// fencedAppendScript appends one change-stream entry (Redis Cluster, after
// the values) only while the stream writer key holds the caller's claim or
// no claim. KEYS[1] is the stream, KEYS[2] the stream writer key. ARGV[1]
// the claim, ARGV[2] stream maxlen (0: none), then field, value pairs.
// Answers the entry's id, or the error "FENCED <claim stored>".
var fencedAppendScript = redis.NewScript(`
local w = redis.call('GET', KEYS[2])
if w and w ~= ARGV[1] then return redis.error_reply('FENCED ' .. w) end
if ARGV[2] ~= '0' then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
`)

// batchScript is writeScript for many keys of one generation at once (not
// on Redis Cluster, where the keys span slots): one script call per chunk
// amortises the per-call cost. KEYS[1] is the stream, KEYS[1+i] the value
// key of change i. ARGV[1] stream maxlen (0: none), ARGV[2] tombstone ttl ms,
// then per change: version (16 hex), op, payload, user key. Returns one
// result per change (1 applied, 2 same version present, 0 newer present).
var batchScript = redis.NewScript(`
local res = {}
local fields = {}
local n = #KEYS - 1
for i = 1, n do
  local vk = KEYS[i + 1]
  local a = 2 + (i - 1) * 4
  local ver, op, payload, key = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local r = 1
  local cur = redis.call('GETRANGE', vk, 0, 15)
  if string.len(cur) == 16 then
    if cur == ver then
      r = 2
    else
      local ch = tonumber(string.sub(cur, 1, 8), 16)
      local cl = tonumber(string.sub(cur, 9, 16), 16)
      local nh = tonumber(string.sub(ver, 1, 8), 16)
      local nl = tonumber(string.sub(ver, 9, 16), 16)
      if ch and cl and (ch > nh or (ch == nh and cl > nl)) then r = 0 end
    end
  end
  if r == 1 then
    local v = ver .. op .. payload
    if op == 'd' then
      redis.call('SET', vk, v, 'PX', ARGV[2])
    else
      redis.call('SET', vk, v)
    end
    fields[#fields + 1] = key
    fields[#fields + 1] = v
  end
  res[i] = r
end
if #fields > 0 then
  if ARGV[1] ~= '0' then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
  else
    redis.call('XADD', KEYS[1], '*', unpack(fields))
  end
end
return res
`)

// batchChunk bounds the changes one batch script call writes, so that one
// call does not hold Redis for long.
const batchChunk = 128

// cutoverScript sets the pointer and appends the control event atomically.
// KEYS[1] pointer, KEYS[2] control stream; ARGV[1] generation. Returns the
// previous generation ("0" for none).
var cutoverScript = redis.NewScript(`
local prev = redis.call('GET', KEYS[1]) or '0'
if prev == ARGV[1] then return prev end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000', '*', 't', 'cutover', 'gen', ARGV[1], 'prev', prev)
return prev
`)

// deletePointerScript removes the pointer and appends a delete event to the
// control stream atomically, so that a client sees either both or neither.
// KEYS[1] pointer, KEYS[2] control stream. Returns the removed generation
// ("0" for none).
var deletePointerScript = redis.NewScript(`
local prev = redis.call('GET', KEYS[1]) or '0'
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000', '*', 't', 'delete', 'prev', prev)
return prev
`)

// Set stores value under key in the projection's live generation (the one
// its pointer names, read with one GET per call), if version is newer than the
// stored one. It reports whether the value was applied. Writers that know
// their generation (cache-producers) use SetGen or Apply instead.
func (p *Publisher) Set(ctx context.Context, proj, key string, value []byte, version int64) (bool, error) {
	gen, err := p.liveGeneration(ctx, proj)
	if err != nil {
		return false, err
	}
	return p.SetGen(ctx, proj, gen, key, value, version)
}

// Delete deletes key from the projection's live generation, leaving a
// tombstone with version, if version is newer than the stored one.
func (p *Publisher) Delete(ctx context.Context, proj, key string, version int64) (bool, error) {
	gen, err := p.liveGeneration(ctx, proj)
	if err != nil {
		return false, err
	}
	return p.DeleteGen(ctx, proj, gen, key, version)
}

// SetGen is Set on an explicit generation.
func (p *Publisher) SetGen(ctx context.Context, proj string, gen int64, key string, value []byte, version int64) (bool, error) {
	return p.applyOne(ctx, proj, gen, Change{Key: key, Value: value, Version: version, Op: OpSet})
}

// DeleteGen is Delete on an explicit generation.
func (p *Publisher) DeleteGen(ctx context.Context, proj string, gen int64, key string, version int64) (bool, error) {
	return p.applyOne(ctx, proj, gen, Change{Key: key, Version: version, Op: OpDelete})
}

func (p *Publisher) applyOne(ctx context.Context, proj string, gen int64, c Change) (bool, error) {
	var res [1]Result
	changes, over := p.tombstoneOversized([]Change{c})
	if err := p.apply(ctx, proj, gen, "", changes, res[:]); err != nil {
		return false, err
	}
	over.mark(res[:])
	return res[0].Applied, res[0].Err
}

func (p *Publisher) liveGeneration(ctx context.Context, proj string) (int64, error) {
	gen, err := p.CurrentGeneration(ctx, proj)
	if err != nil {
		return 0, err
	}
	if gen == 0 {
		return 0, fmt.Errorf("publish to %s: %w", proj, ErrNoGeneration)
	}
	return gen, nil
}

// Apply writes a batch of changes to generation gen of projection proj in
// one pipeline (two on Redis Cluster: values, then stream entries), each
// version-guarded on its own. Changes of one key apply in batch order.
// Invalid changes get their Result.Err and the others are still written. The
// returned error is for the batch as a whole (Redis unreachable, context
// done); then no Result is meaningful, and the batch may be retried as is:
// versions make the repeat harmless.
func (p *Publisher) Apply(ctx context.Context, proj string, gen int64, changes []Change) ([]Result, error) {
	return p.ApplyAs(ctx, proj, gen, "", changes)
}

// ApplyAs is Apply by the writer that holds claim on the generation (see
// ClaimStream). On Redis Cluster, where a batch's values are written before
// its change-stream entries, the entries are appended only while the stream
// writer key holds claim (or none): a writer paused between the two steps
// past another writer's ClaimStream gets an error wrapping ErrFenced, and
// its older versions never follow the new writer's in the stream. The
// values it wrote are version-guarded (never over a newer one); the writer
// that claimed the generation rewrites the same versions when it replays
// those records, and appends their entries then. On a single node each
// chunk's values and entries are written by one script, so the version
// guard alone orders the stream and claim is not read. claim "" is Apply.
func (p *Publisher) ApplyAs(ctx context.Context, proj string, gen int64, claim string, changes []Change) ([]Result, error) {
	res := make([]Result, len(changes))
	changes, over := p.tombstoneOversized(changes)
	if err := p.apply(ctx, proj, gen, claim, changes, res); err != nil {
		return nil, err
	}
	over.mark(res)
	return res, nil
}

// ClaimStream stores claim as the writer of generation gen's change stream
// (StreamWriterKey), over any claim stored. A writer calls it once it has
// taken the generation over, before its first ApplyAs; from then on a
// writer with another claim appends nothing on Redis Cluster.
func (p *Publisher) ClaimStream(ctx context.Context, proj string, gen int64, claim string) error {
	if err := ValidateProjection(proj); err != nil {
		return err
	}
	if err := validateGeneration(gen); err != nil {
		return err
	}
	if claim == "" {
		return fmt.Errorf("claim the change stream of %s/g%d: %w: empty claim", proj, gen, ErrInvalidOption)
	}
	if err := p.rdb.Set(ctx, StreamWriterKey(proj, gen), claim, 0).Err(); err != nil {
		return fmt.Errorf("claim the change stream of %s/g%d: %w", proj, gen, err)
	}
	return nil
}

// oversized lists the changes whose value was too large, with their errors.
type oversized struct {
	idx  []int
	errs []error
}

// tombstoneOversized returns changes with every set whose value exceeds the
// limit turned into a delete of its key at its version (on a copy: the
// caller's slice is left alone). The value is refused (Result.Err wraps
// ErrValueTooLarge, set by mark once the writes are done) but the key's
// previous value is removed all the same: readers must not go on serving a
// value that a newer change replaced, and a writer's own bookkeeping (a
// producer's index) that records the key at this version stays true.
func (p *Publisher) tombstoneOversized(changes []Change) ([]Change, oversized) {
	var over oversized
	for i := range changes {
		c := &changes[i]
		if c.Op != OpSet || len(c.Value) <= p.cfg.maxValueBytes || c.Key == "" || len(c.Key) > MaxKeyLen || c.Version <= 0 {
			continue
		}
		if over.idx == nil {
			changes = slices.Clone(changes)
			c = &changes[i]
		}
		over.idx = append(over.idx, i)
		over.errs = append(over.errs, fmt.Errorf("key %q: %w: %d bytes > %d (its previous value is removed)",
			c.Key, ErrValueTooLarge, len(c.Value), p.cfg.maxValueBytes))
		c.Op, c.Value = OpDelete, nil
	}
	return changes, over
}

// mark records the refusals in res: the tombstone written in their place
// does not count as applied.
func (o oversized) mark(res []Result) {
	for j, i := range o.idx {
		res[i] = Result{Err: o.errs[j]}
	}
}

func (p *Publisher) validateChange(c *Change) error {
	if c.Key == "" || len(c.Key) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes (want 1..%d)", ErrInvalidKey, len(c.Key), MaxKeyLen)
	}
	if c.Version <= 0 {
		return fmt.Errorf("key %q: %w: %d", c.Key, ErrInvalidVersion, c.Version)
	}
	switch c.Op {
	case OpSet:
		if len(c.Value) > p.cfg.maxValueBytes {
			return fmt.Errorf("key %q: %w: %d bytes > %d", c.Key, ErrValueTooLarge, len(c.Value), p.cfg.maxValueBytes)
		}
	case OpDelete:
	default:
		return fmt.Errorf("key %q: unknown op %v", c.Key, c.Op)
	}
	return nil
}

func (p *Publisher) apply(ctx context.Context, proj string, gen int64, claim string, changes []Change, res []Result) error {
	if err := ValidateProjection(proj); err != nil {
		return err
	}
	if err := validateGeneration(gen); err != nil {
		return err
	}
	if len(changes) == 0 {
		return nil
	}
	stream := StreamKey(proj, gen)
	maxLen := strconv.FormatInt(p.cfg.streamMaxLen, 10)
	ttl := strconv.FormatInt(p.cfg.tombstoneTTL.Milliseconds(), 10)
	prefix := appendGenPrefix(make([]byte, 0, 64), proj, gen)
	preps := make([]prepared, 0, len(changes))
	for i := range changes {
		c := &changes[i]
		if err := p.validateChange(c); err != nil {
			res[i].Err = err
			continue
		}
		op := "s"
		if c.Op == OpDelete {
			op = "d"
		}
		preps = append(preps, prepared{idx: i, version: versionHex(c.Version), op: op})
	}
	if len(preps) == 0 {
		return nil
	}

	var appendIdx []int // changes whose stream entry is still to write
	if p.cluster == nil {
		return p.applyBatched(ctx, proj, gen, stream, maxLen, ttl, prefix, changes, preps, res)
	}
	run := func() ([]*redis.Cmd, error) {
		pipe := p.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(preps))
		for j, pr := range preps {
			c := &changes[pr.idx]
			vk := string(append(prefix, c.Key...))
			var payload any = c.Value
			if c.Op == OpDelete {
				payload = ""
			}
			// The stream is in another slot: the value only, then XADD below.
			cmds[j] = writeScript.EvalSha(ctx, pipe, []string{vk}, pr.version, pr.op, payload, c.Key, maxLen, ttl, "0")
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run()
	if err != nil && isNoScript(cmds) {
		if lerr := p.loadScript(ctx, writeScript); lerr != nil {
			return fmt.Errorf("publish %s/g%d: load script: %w", proj, gen, lerr)
		}
		cmds, err = run()
	}
	if err != nil {
		if first := firstTransportError(cmds); first != nil || ctx.Err() != nil {
			return fmt.Errorf("publish %s/g%d: %w", proj, gen, errors.Join(err, ctx.Err()))
		}
	}
	for j, pr := range preps {
		n, cerr := cmds[j].Int64()
		if cerr != nil {
			res[pr.idx].Err = fmt.Errorf("publish %s/g%d key %q: %w", proj, gen, changes[pr.idx].Key, cerr)
			continue
		}
		res[pr.idx].Applied = n == 1
		if n >= 1 {
			appendIdx = append(appendIdx, j)
		}
	}
	if len(appendIdx) == 0 {
		return nil
	}
	// One stream entry per chunk of up to batchChunk changes: field = key,
	// value = stored value.
	if claim == "" {
		fields := make([]any, 0, 2*len(appendIdx))
		for _, j := range appendIdx {
			fields = appendStreamField(fields, &changes[preps[j].idx], preps[j])
		}
		err = p.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Approx: true, MaxLen: p.cfg.streamMaxLen, Values: fields}).Err()
		if err != nil {
			// The values are written; a retry of the batch re-appends the
			// stream entry (same version → result 2 → append again).
			return fmt.Errorf("publish %s/g%d: append change stream: %w", proj, gen, err)
		}
		return nil
	}
	return p.appendFenced(ctx, proj, gen, claim, stream, maxLen, changes, preps, appendIdx)
}

// appendStreamField appends c's stream field (its key) and value (what was
// stored: version, op, payload) to fields.
func appendStreamField(fields []any, c *Change, pr prepared) []any {
	v := pr.version + pr.op
	if c.Op == OpSet {
		v += string(c.Value)
	}
	return append(fields, c.Key, v)
}

// appendFenced appends the stream entries of preps[appendIdx] with
// fencedAppendScript, one entry per chunk of batchChunk changes, in one
// pipeline. The chunks before a refused one stay appended: they were
// checked before the other writer's claim, so they precede its entries.
func (p *Publisher) appendFenced(ctx context.Context, proj string, gen int64, claim, stream, maxLen string,
	changes []Change, preps []prepared, appendIdx []int) error {
	keys := []string{stream, StreamWriterKey(proj, gen)}
	run := func() ([]*redis.Cmd, error) {
		pipe := p.rdb.Pipeline()
		var cmds []*redis.Cmd
		for lo := 0; lo < len(appendIdx); lo += batchChunk {
			chunk := appendIdx[lo:min(lo+batchChunk, len(appendIdx))]
			args := make([]any, 0, 2+2*len(chunk))
			args = append(args, claim, maxLen)
			for _, j := range chunk {
				args = appendStreamField(args, &changes[preps[j].idx], preps[j])
			}
			cmds = append(cmds, fencedAppendScript.EvalSha(ctx, pipe, keys, args...))
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run()
	if err != nil && isNoScript(cmds) {
		if lerr := p.loadScript(ctx, fencedAppendScript); lerr != nil {
			return fmt.Errorf("publish %s/g%d: load script: %w", proj, gen, lerr)
		}
		cmds, err = run()
	}
	if err == nil {
		return nil
	}
	for _, c := range cmds {
		if cerr := c.Err(); cerr != nil && redis.HasErrorPrefix(cerr, "FENCED") {
			other := strings.TrimSpace(strings.TrimPrefix(cerr.Error(), "FENCED"))
			return fmt.Errorf("publish %s/g%d: append change stream: %w (claimed by %q)", proj, gen, ErrFenced, other)
		}
	}
	// The values are written; a retry of the batch re-appends the entries
	// (same version → result 2 → append again).
	return fmt.Errorf("publish %s/g%d: append change stream: %w", proj, gen, err)
}

func isNoScript(cmds []*redis.Cmd) bool {
	for _, c := range cmds {
		if c != nil && c.Err() != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}

// firstTransportError returns the first error of cmds that is not a Redis
// error reply (a network or context error that failed the batch).
func firstTransportError(cmds []*redis.Cmd) error {
	for _, c := range cmds {
		if c == nil || c.Err() == nil {
			continue
		}
		var rerr redis.Error
		if !errors.As(c.Err(), &rerr) {
			return c.Err()
		}
	}
	return nil
}

func (p *Publisher) loadScript(ctx context.Context, s *redis.Script) error {
	if p.cluster != nil {
		return p.cluster.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			return s.Load(ctx, m).Err()
		})
	}
	return s.Load(ctx, p.rdb).Err()
}

// Cutover makes gen the live generation of proj: it sets the pointer and
// appends a cutover event to the control stream in one atomic script, and
// clients follow it. Moving to an older generation (a rollback) is allowed:
// it is an explicit operator action, and that generation must still hold
// data. Cutting over to the generation already live is a no-op.
func (p *Publisher) Cutover(ctx context.Context, proj string, gen int64) error {
	if err := ValidateProjection(proj); err != nil {
		return err
	}
	if err := validateGeneration(gen); err != nil {
		return err
	}
	err := cutoverScript.Run(ctx, p.rdb, []string{PointerKey(proj), ControlKey(proj)}, strconv.FormatInt(gen, 10)).Err()
	if err != nil {
		return fmt.Errorf("cutover %s to g%d: %w", proj, gen, err)
	}
	return nil
}

// DeletePointer ends proj for its readers: it removes the pointer and appends
// a delete event to the control stream in one atomic script (like Cutover).
// Clients following proj drop what they hold and answer ErrNoGeneration from
// then on; a later Cutover brings the projection back. It is the only way the
// pointer is removed: a pointer that is merely missing (a Redis that lost its
// data) is not a delete, and clients keep serving what they hold. Deleting a
// projection that has no pointer still appends the event, so a retried delete
// reaches every client.
func (p *Publisher) DeletePointer(ctx context.Context, proj string) error {
	if err := ValidateProjection(proj); err != nil {
		return err
	}
	if err := deletePointerScript.Run(ctx, p.rdb, []string{PointerKey(proj), ControlKey(proj)}).Err(); err != nil {
		return fmt.Errorf("delete pointer of %s: %w", proj, err)
	}
	return nil
}

// CurrentGeneration returns the generation proj's pointer names, or 0 when
// none is live yet.
func (p *Publisher) CurrentGeneration(ctx context.Context, proj string) (int64, error) {
	return readPointer(ctx, p.rdb, proj)
}

func readPointer(ctx context.Context, rdb redis.Cmdable, proj string) (int64, error) {
	if err := ValidateProjection(proj); err != nil {
		return 0, err
	}
	s, err := rdb.Get(ctx, PointerKey(proj)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read generation pointer of %s: %w", proj, err)
	}
	return parsePointer(proj, s)
}

func parsePointer(proj, s string) (int64, error) {
	gen, err := strconv.ParseInt(s, 10, 64)
	if err != nil || gen < 0 {
		return 0, fmt.Errorf("generation pointer of %s holds %q: %w", proj, s, ErrInvalidGeneration)
	}
	return gen, nil
}

// RetireGeneration deletes every key of generation gen of proj: it SCANs
// GenerationPattern (on every master of a cluster) batch keys at a time and
// UNLINKs them, then unlinks the change stream and its writer key. It never uses KEYS. It
// refuses the live generation with ErrGenerationLive. It returns how many
// keys it deleted; it can be called again after an error and resumes
// naturally (what is gone stays gone).
func (p *Publisher) RetireGeneration(ctx context.Context, proj string, gen int64, batch int) (int64, error) {
	if err := validateGeneration(gen); err != nil {
		return 0, err
	}
	live, err := p.CurrentGeneration(ctx, proj)
	if err != nil {
		return 0, err
	}
	if live == gen {
		return 0, fmt.Errorf("retire %s/g%d: %w", proj, gen, ErrGenerationLive)
	}
	if batch <= 0 {
		batch = 1000
	}
	pattern := GenerationPattern(proj, gen)
	var deleted atomic.Int64
	scanNode := func(ctx context.Context, node redis.Cmdable, perKey bool) error {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, pattern, int64(batch)).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				if perKey { // cluster: keys of one node span many slots
					pipe := node.Pipeline()
					cmds := make([]*redis.IntCmd, len(keys))
					for i, k := range keys {
						cmds[i] = pipe.Unlink(ctx, k)
					}
					if _, err := pipe.Exec(ctx); err != nil {
						return err
					}
					for _, c := range cmds {
						deleted.Add(c.Val())
					}
				} else {
					n, err := node.Unlink(ctx, keys...).Result()
					if err != nil {
						return err
					}
					deleted.Add(n)
				}
			}
			cursor = next
			if cursor == 0 {
				return nil
			}
		}
	}
	if p.cluster != nil {
		err = p.cluster.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			return scanNode(ctx, m, true)
		})
	} else {
		err = scanNode(ctx, p.rdb, false)
	}
	if err != nil {
		return deleted.Load(), fmt.Errorf("retire %s/g%d: %w", proj, gen, err)
	}
	if err := p.rdb.Unlink(ctx, StreamKey(proj, gen), StreamWriterKey(proj, gen)).Err(); err != nil {
		return deleted.Load(), fmt.Errorf("retire %s/g%d: unlink change stream: %w", proj, gen, err)
	}
	return deleted.Load(), nil
}

type prepared struct {
	idx     int
	version string
	op      string
}

// applyBatched writes preps with batchScript, chunk by chunk, in one
// pipeline (standalone or replicated Redis: every key on one node).
func (p *Publisher) applyBatched(ctx context.Context, proj string, gen int64, stream, maxLen, ttl string,
	prefix []byte, changes []Change, preps []prepared, res []Result) error {
	run := func() ([]*redis.Cmd, error) {
		var pipe redis.Scripter = p.rdb
		var pl redis.Pipeliner
		if len(preps) > batchChunk {
			pl = p.rdb.Pipeline()
			pipe = pl
		} // one chunk (a Set, most batches): sent as is, without a pipeline's cost
		var cmds []*redis.Cmd
		for lo := 0; lo < len(preps); lo += batchChunk {
			chunk := preps[lo:min(lo+batchChunk, len(preps))]
			keys := make([]string, 0, 1+len(chunk))
			args := make([]any, 0, 2+4*len(chunk))
			keys = append(keys, stream)
			args = append(args, maxLen, ttl)
			for _, pr := range chunk {
				c := &changes[pr.idx]
				keys = append(keys, string(append(prefix, c.Key...)))
				var payload any = c.Value
				if c.Op == OpDelete {
					payload = ""
				}
				args = append(args, pr.version, pr.op, payload, c.Key)
			}
			cmds = append(cmds, batchScript.EvalSha(ctx, pipe, keys, args...))
		}
		if pl == nil {
			return cmds, cmds[0].Err()
		}
		_, err := pl.Exec(ctx)
		return cmds, err
	}
	cmds, err := run()
	if err != nil && isNoScript(cmds) {
		if lerr := p.loadScript(ctx, batchScript); lerr != nil {
			return fmt.Errorf("publish %s/g%d: load script: %w", proj, gen, lerr)
		}
		cmds, err = run()
	}
	if err != nil {
		if firstTransportError(cmds) != nil || ctx.Err() != nil {
			return fmt.Errorf("publish %s/g%d: %w", proj, gen, errors.Join(err, ctx.Err()))
		}
	}
	for ci, cmd := range cmds {
		chunk := preps[ci*batchChunk : min((ci+1)*batchChunk, len(preps))]
		vals, cerr := cmd.Int64Slice()
		if cerr == nil && len(vals) != len(chunk) {
			cerr = fmt.Errorf("script returned %d results for %d changes", len(vals), len(chunk))
		}
		for j, pr := range chunk {
			if cerr != nil {
				res[pr.idx].Err = fmt.Errorf("publish %s/g%d key %q: %w", proj, gen, changes[pr.idx].Key, cerr)
				continue
			}
			res[pr.idx].Applied = vals[j] == 1
		}
	}
	return nil
}

// WriteTx queues the value and change-stream writes of changes to
// generation gen of proj onto tx, a MULTI/EXEC pipeline (redis.Tx.TxPipelined
// or Client.TxPipeline) that the caller executes together with its own
// bookkeeping, so that the values, their stream entries and the caller's
// position land in one atomic step. It returns one Result per change:
// validation errors (ErrInvalidKey, ErrInvalidVersion, ErrValueTooLarge)
// there, and Applied set for every change queued, which holds once the
// caller's EXEC succeeds.
//
// Unlike Apply, the writes are not version-guarded key by key; that is what
// makes them cheap (a fraction of Redis's CPU per write). The caller takes
// on the guard: every version it writes must be higher than any version
// already stored under that key in the generation. A cache-producer meets it
// by being the generation's only writer of versions that are its topic's
// offsets, in order, and by making each transaction conditional on its
// consumed offset being unchanged since it read it (WATCH): a transaction
// then lands only if nothing was written to the generation since, and never
// twice. Writers that cannot promise this use Apply.
//
// The changes of one call share stream entries of up to 128 changes, like
// Apply's, in the packed form (see streamentry.go). Not available on Redis Cluster (ErrClusterUnsupported), where the
// keys of a generation span slots.
func (p *Publisher) WriteTx(ctx context.Context, tx redis.Pipeliner, proj string, gen int64, changes []Change) ([]Result, error) {
	changes, over := p.tombstoneOversized(changes)
	res, err := p.writeTx(ctx, tx, proj, gen, changes)
	if err != nil {
		return nil, err
	}
	over.mark(res)
	return res, nil
}

func (p *Publisher) writeTx(ctx context.Context, tx redis.Pipeliner, proj string, gen int64, changes []Change) ([]Result, error) {
	if p.cluster != nil {
		return nil, fmt.Errorf("publish %s/g%d in a transaction: %w", proj, gen, ErrClusterUnsupported)
	}
	if err := ValidateProjection(proj); err != nil {
		return nil, err
	}
	if err := validateGeneration(gen); err != nil {
		return nil, err
	}
	res := make([]Result, len(changes))
	prefix := appendGenPrefix(make([]byte, 0, 64), proj, gen)
	stream := StreamKey(proj, gen)

	// Every value key and stored value of the batch is laid out in one
	// buffer, copied into one string, and handed to go-redis as pointers
	// into one slice of strings: a batch costs a handful of allocations, not
	// five per change (a string and four interface boxes).
	size, valid := 0, 0
	for i := range changes {
		c := &changes[i]
		if err := p.validateChange(c); err != nil {
			res[i].Err = err
			continue
		}
		valid++
		size += len(prefix) + len(c.Key) + valueHeaderLen
		if c.Op == OpSet {
			size += len(c.Value)
		}
	}
	buf := make([]byte, 0, size)
	for i := range changes {
		c := &changes[i]
		if res[i].Err != nil {
			continue
		}
		buf = append(buf, prefix...)
		buf = append(buf, c.Key...)
		buf = AppendVersionHex(buf, c.Version)
		if c.Op == OpSet {
			buf = append(buf, opSet)
			buf = append(buf, c.Value...)
		} else {
			buf = append(buf, opDelete)
		}
	}
	all := string(buf)
	strs := make([]string, 2*valid) // per change: value key, stored value
	at, k := 0, 0
	for i := range changes {
		c := &changes[i]
		if res[i].Err != nil {
			continue
		}
		vkLen, vLen := len(prefix)+len(c.Key), valueHeaderLen
		if c.Op == OpSet {
			vLen += len(c.Value)
		}
		strs[k], strs[k+1] = all[at:at+vkLen], all[at+vkLen:at+vkLen+vLen]
		at += vkLen + vLen
		k += 2
	}

	// Values go out as MSETs, one per run of upserts between tombstones:
	// in a MULTI each queued command costs Redis a parse, a copy and a
	// reply, so one MSET of n values costs it far less than n SETs. A
	// key written twice keeps its last value, as with SETs in order.
	sets := make([]any, 0, 2*valid)
	flushSets := func() {
		if len(sets) > 0 {
			tx.MSet(ctx, sets...) // copies its arguments
			sets = sets[:0]
		}
	}
	// The stream gets packed entries of up to batchChunk changes (see
	// streamentry.go), all laid out in one buffer.
	packed := make([]byte, 0, size+4*valid+valid/batchChunk+1) // the values again, keys and lengths
	entryStart, inEntry := 0, 0
	flush := func() {
		if inEntry > 0 {
			entry := packed[entryStart:len(packed):len(packed)]
			tx.XAdd(ctx, &redis.XAddArgs{Stream: stream, Approx: p.cfg.streamMaxLen > 0, MaxLen: p.cfg.streamMaxLen,
				Values: []any{packedField, entry}})
			entryStart, inEntry = len(packed), 0
		}
	}
	k = 0
	for i := range changes {
		c := &changes[i]
		if res[i].Err != nil {
			continue
		}
		vk, v := &strs[k], &strs[k+1]
		k += 2
		if c.Op == OpDelete {
			// A tombstone expires: SET PX, in order after the values
			// before it (MSET holds no expiry).
			flushSets()
			tx.Set(ctx, *vk, v, p.cfg.tombstoneTTL)
		} else {
			sets = append(sets, vk, v)
		}
		if inEntry == 0 {
			packed = append(packed, packedV1)
		}
		packed = appendPacked(packed, c.Key, *v)
		if inEntry++; inEntry == batchChunk {
			flush()
		}
		res[i].Applied = true
	}
	flushSets()
	flush()
	return res, nil
}

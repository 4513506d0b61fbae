package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Epochs: each generation's bookkeeping carries an identity, so that a
// producer can tell "Redis lost this generation's data" from "nothing was
// written yet" (issue #15):
//
//	dc:P:producer:gN:epoch{dc:P:producer:gN:offset}
//	                            string: 16 random hex digits, written when
//	                            the generation's bookkeeping is created (its
//	                            offset first stored: InitPosition, or a
//	                            writer's first commit) and replaced by every
//	                            rebuild (BeginRebuild)
//
// The hash tag is the offset key's whole name, which has no tag of its own:
// on Redis Cluster the epoch lives in the offset's slot, so both are read
// with one MGET and created by one script. A producer remembers the epoch
// it created or read (projector.Writer's Mark) with the offset it committed
// last; the offset gone, the epoch gone or changed, or the offset below what
// it committed, means the bookkeeping it wrote is not there any more
// (package rebuild decides what that means, package fanout acts on it).

// EpochKey holds generation gen's epoch.
func EpochKey(proj string, gen int64) string {
	return genPrefix(proj, gen) + "epoch{" + OffsetKey(proj, gen) + "}"
}

// NewEpoch returns a fresh random epoch.
func NewEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}

// Position is what Redis holds of a generation's position: its offset and
// epoch, read together.
type Position struct {
	Offset      int64
	OffsetKnown bool   // the offset key exists
	Epoch       string // "" when none is stored
	Writer      string // the writer claim (claim.go); "" when none is stored
}

// Position reads generation gen's offset, epoch and writer claim in one
// round trip (one MGET: the keys share a slot on Cluster).
func (l *Ledger) Position(ctx context.Context, proj string, gen int64) (Position, error) {
	vals, err := l.rdb.MGet(ctx, OffsetKey(proj, gen), EpochKey(proj, gen), WriterKey(proj, gen)).Result()
	if err != nil {
		return Position{}, fmt.Errorf("read position of %s/g%d: %w", proj, gen, err)
	}
	var p Position
	if s, ok := vals[0].(string); ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return Position{}, fmt.Errorf("%w: offset of %s/g%d is %q", ErrCorrupt, proj, gen, s)
		}
		p.Offset, p.OffsetKnown = n, true
	}
	if s, ok := vals[1].(string); ok {
		p.Epoch = s
	}
	if s, ok := vals[2].(string); ok {
		p.Writer = s
	}
	return p, nil
}

// InitPosition creates generation gen's bookkeeping unless its offset
// exists: the offset (offset), the epoch (epoch) and, on a single Redis
// node, an index count of 0 and the log index layout (ixlog.go), in one atomic
// step. It returns the stored position and whether it created it.
func (l *Ledger) InitPosition(ctx context.Context, proj string, gen, offset int64, epoch string) (Position, bool, error) {
	keys := []string{OffsetKey(proj, gen), EpochKey(proj, gen)}
	args := []any{strconv.FormatInt(offset, 10), epoch}
	if !l.cluster {
		keys = append(keys, IndexCountKey(proj, gen), IndexFormatKey(proj, gen))
		args = append(args, FormatMark(l.NewFormat()))
	}
	created, err := initScript.Run(ctx, l.rdb, keys, args...).Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Position{}, false, fmt.Errorf("init offset of %s/g%d: %w", proj, gen, err)
	}
	p, err := l.Position(ctx, proj, gen)
	return p, created == 1, err
}

// initScript creates a generation's offset and epoch (and, given four keys,
// its index count and layout mark) together, unless the offset exists.
var initScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
if #KEYS == 4 then
  redis.call('SET', KEYS[3], '0')
  redis.call('SET', KEYS[4], ARGV[3])
end
return 1`)

// AdoptEpoch stores epoch as generation gen's epoch if its offset exists
// and it has none (bookkeeping created before epochs), and returns the
// stored position.
func (l *Ledger) AdoptEpoch(ctx context.Context, proj string, gen int64, epoch string) (Position, error) {
	err := adoptScript.Run(ctx, l.rdb, []string{OffsetKey(proj, gen), EpochKey(proj, gen)}, epoch).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Position{}, fmt.Errorf("store epoch of %s/g%d: %w", proj, gen, err)
	}
	return l.Position(ctx, proj, gen)
}

var adoptScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1`)

// Package prodtest helps the cache-producer's tests: compacted topics on a real
// broker, records in the events contract (and broken ones), a reference model
// of what a generation must hold, and a reader of what Redis holds.
package prodtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Producer writes records to a topic of a broker.
type Producer struct {
	T         testing.TB
	Client    *kgo.Client
	Topic     string
	Aggregate string
	versions  map[string]int64
}

// NewProducer creates topic <prefix>.<aggregate> (one partition, compacted)
// on the broker at addr and returns a producer for it.
func NewProducer(t testing.TB, addr, prefix, aggregate string) *Producer {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	topic := events.Topic(prefix, aggregate)
	compact := "compact"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := kadm.NewClient(cl).CreateTopics(ctx, 1, 1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	return &Producer{T: t, Client: cl, Topic: topic, Aggregate: aggregate, versions: map[string]int64{}}
}

func (p *Producer) record(key string, payload any) *kgo.Record {
	p.T.Helper()
	p.versions[key]++
	e := events.Envelope{
		Aggregate: p.Aggregate, Key: key, Version: p.versions[key], Op: events.OpDelete,
		EventID: events.NewEventID(), SourceTime: time.Now(),
	}
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			p.T.Fatalf("marshal: %v", err)
		}
		e.Op, e.Payload = events.OpUpsert, b
	}
	r, err := events.ToRecord(e, strings.TrimSuffix(p.Topic, "."+p.Aggregate))
	if err != nil {
		p.T.Fatalf("to record: %v", err)
	}
	r.Topic = p.Topic
	return r
}

// Upsert builds an upsert record of key with payload (marshalled to JSON).
func (p *Producer) Upsert(key string, payload any) *kgo.Record { return p.record(key, payload) }

// Tombstone builds a delete record of key.
func (p *Producer) Tombstone(key string) *kgo.Record { return p.record(key, nil) }

// Garbage builds an upsert record of key whose value is not JSON.
func (p *Producer) Garbage(key string) *kgo.Record {
	r := p.record(key, map[string]any{"x": 1})
	r.Value = []byte("not json{")
	return r
}

// Produce writes recs synchronously and returns their offsets. It must be
// called from the test's goroutine (see TryProduce).
func (p *Producer) Produce(recs ...*kgo.Record) []int64 {
	p.T.Helper()
	out, err := p.TryProduce(recs...)
	if err != nil {
		p.T.Fatalf("produce: %v", err)
	}
	return out
}

// TryProduce is Produce for other goroutines: it returns the error.
func (p *Producer) TryProduce(recs ...*kgo.Record) ([]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := p.Client.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		return nil, err
	}
	out := make([]int64, len(res))
	for i, r := range res {
		out[i] = r.Record.Offset
	}
	return out, nil
}

// Value is one live projected value: its payload and version.
type Value struct {
	Data    string
	Version int64
}

// Model computes what a generation must hold after a sequence of records:
// the documented semantics of package projector, written independently.
type Model struct {
	proj  *projection.Projection
	state map[string]modelCell    // projected key → cell
	idx   map[string]ledger.Entry // source key → owned key
	// Dead counts records that could not be projected.
	Dead int
	// Base is the generation's version base: a record at offset o writes
	// version Base + o + 1 (0 until a rebuild, see package rebuild).
	Base int64
}

type modelCell struct {
	data    string
	version int64
	deleted bool
}

// NewModel returns an empty model of a generation of def.
func NewModel(t testing.TB, def projection.Definition) *Model {
	p, err := projection.Compile(def)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return &Model{proj: p, state: map[string]modelCell{}, idx: map[string]ledger.Entry{}}
}

// Apply applies one record at offset (r.Value nil: tombstone; value not a
// JSON object or missing a key field: unprojectable).
func (m *Model) Apply(offset int64, key string, value []byte) {
	v := m.Base + offset + 1
	var newKey string
	var data []byte
	keep := false
	if value != nil {
		k, d, ok, err := m.proj.Apply(value)
		if err != nil {
			m.Dead++
		} else if ok {
			newKey, data, keep = k, d, true
		}
	}
	old, has := m.idx[key]
	if has && (!keep || old.Key != newKey) {
		if c := m.state[old.Key]; c.version == old.Version {
			m.state[old.Key] = modelCell{version: v, deleted: true}
		}
	}
	if !keep {
		delete(m.idx, key)
		return
	}
	m.state[newKey] = modelCell{data: string(data), version: v}
	m.idx[key] = ledger.Entry{Key: newKey, Version: v}
}

// Live returns the live values.
func (m *Model) Live() map[string]Value {
	out := map[string]Value{}
	for k, c := range m.state {
		if !c.deleted {
			out[k] = Value{Data: c.data, Version: c.version}
		}
	}
	return out
}

// ReadGeneration returns the live values of generation gen of proj in Redis
// (tombstones left out).
func ReadGeneration(ctx context.Context, rdb redis.UniversalClient, proj string, gen int64) (map[string]Value, error) {
	out := map[string]Value{}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			part, err := ReadGeneration(ctx, m, proj, gen)
			mu.Lock()
			defer mu.Unlock()
			for k, v := range part {
				out[k] = v
			}
			return err
		})
		return out, err
	}
	pattern := distcache.GenerationPattern(proj, gen)
	prefix := strings.TrimSuffix(pattern, "*")
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			s, err := rdb.Get(ctx, k).Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return nil, err
			}
			v, err := distcache.ParseVersionHex(s)
			if err != nil || len(s) < 17 {
				return nil, fmt.Errorf("key %s holds %q", k, s)
			}
			switch s[16] {
			case 'd':
			case 's':
				out[strings.TrimPrefix(k, prefix)] = Value{Data: s[17:], Version: v}
			default:
				return nil, fmt.Errorf("key %s holds %q", k, s)
			}
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// Diff describes how got differs from want ("" when equal).
func Diff(got, want map[string]Value) string {
	var b strings.Builder
	keys := map[string]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	n := 0
	for _, k := range sorted {
		g, gok := got[k]
		w, wok := want[k]
		if gok == wok && g == w {
			continue
		}
		if n++; n > 10 {
			b.WriteString("...\n")
			break
		}
		fmt.Fprintf(&b, "key %q: got %+v (present %v), want %+v (present %v)\n", k, g, gok, w, wok)
	}
	return b.String()
}

// StreamVersionsIncrease checks that in generation gen's change stream no
// key's version ever goes backwards. An entry holds one field per written key,
// named by the key, whose value is what was stored (16 hex digits of version,
// op byte, payload: see libs/distcache keys.go). The same version may appear
// twice: on Redis Cluster a replay re-appends the entry of a write it finds
// already stored, and clients ignore the repeat by version.
func StreamVersionsIncrease(ctx context.Context, rdb redis.UniversalClient, proj string, gen int64) error {
	return streamVersions(ctx, rdb, proj, gen, false)
}

// StreamWrittenOnce is StreamVersionsIncrease where no version may repeat:
// on a single Redis node, where the producer writes each batch in one
// transaction, every record's write lands exactly once.
func StreamWrittenOnce(ctx context.Context, rdb redis.UniversalClient, proj string, gen int64) error {
	return streamVersions(ctx, rdb, proj, gen, true)
}

func streamVersions(ctx context.Context, rdb redis.UniversalClient, proj string, gen int64, strict bool) error {
	msgs, err := rdb.XRange(ctx, distcache.StreamKey(proj, gen), "-", "+").Result()
	if err != nil {
		return err
	}
	last := map[string]int64{}
	for _, m := range msgs {
		if len(m.Values) == 0 {
			return fmt.Errorf("entry %s: no fields", m.ID)
		}
		var bad error
		err := distcache.EachStreamChange(m.Values, func(k, stored string) {
			if bad != nil {
				return
			}
			if len(stored) < 17 {
				bad = fmt.Errorf("entry %s: key %q: stored value %q is too short", m.ID, k, stored)
				return
			}
			v, err := distcache.ParseVersionHex(stored[:16])
			if err != nil {
				bad = fmt.Errorf("entry %s: key %q: version %q", m.ID, k, stored[:16])
				return
			}
			if v < last[k] || (strict && v == last[k]) {
				bad = fmt.Errorf("entry %s: key %q version %d after %d", m.ID, k, v, last[k])
				return
			}
			last[k] = v
		})
		if err := errors.Join(err, bad); err != nil {
			return fmt.Errorf("entry %s: %w", m.ID, err)
		}
	}
	return nil
}

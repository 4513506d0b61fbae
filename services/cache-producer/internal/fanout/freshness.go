package fanout

import (
	"sync"
	"time"

	"github.com/distcache/distcache/services/cache-producer/internal/feed"
)

// freshness is what a runner knows of how fresh each of its generations is, for Status: the
// source time of the newest record written (NewestSourceTime) and the dead letters of the last
// hour (DeadLettersLastHour). The dispatcher notes each batch it hands a generation's writer
// (dispatched); the writer's commit of that batch makes its source time the generation's newest
// (written). Only a batch's last record is looked at (feed.Record.SourceTime, decoded with the
// envelope), so the hot path adds a few steps per batch, none per record.
type freshness struct {
	mu      sync.Mutex
	newest  []time.Time      // per generation
	dead    []hourCounter    // per generation
	pending [][]pendingBatch // per generation: batches handed to the writer, not yet committed
}

// pendingBatch is a batch handed to a generation's writer: its position after it and the source
// time of its last record (zero: none).
type pendingBatch struct {
	next       int64
	sourceTime time.Time
}

func newFreshness(gens int) *freshness {
	return &freshness{newest: make([]time.Time, gens), dead: make([]hourCounter, gens), pending: make([][]pendingBatch, gens)}
}

// restart forgets the batches of a read that ended: its writers have stopped, and what they did
// not commit is read again.
func (f *freshness) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.pending {
		f.pending[i] = f.pending[i][:0]
	}
}

// dispatched notes sub, the batch handed to generation i's writer: the source time of its last
// record, the newest change it brings (offsets follow commit order).
func (f *freshness) dispatched(i int, sub feed.Batch) {
	p := pendingBatch{next: sub.Next}
	if n := len(sub.Records); n > 0 {
		p.sourceTime = sub.Records[n-1].SourceTime
	}
	f.mu.Lock()
	f.pending[i] = append(f.pending[i], p)
	f.mu.Unlock()
}

// written records that generation i's writer committed every batch before next, with
// deadLetters dead letters.
func (f *freshness) written(i int, next int64, deadLetters int, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.pending[i]
	n := 0
	for n < len(q) && q[n].next <= next {
		if t := q[n].sourceTime; t.After(f.newest[i]) {
			f.newest[i] = t
		}
		n++
	}
	f.pending[i] = q[:copy(q, q[n:])]
	if deadLetters > 0 {
		f.dead[i].add(now, deadLetters)
	}
}

// fill sets s's freshness fields for generation i.
func (f *freshness) fill(i int, s *Status, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s.NewestSourceTime = f.newest[i]
	s.DeadLettersLastHour = f.dead[i].sum(now)
}

// hourCounter counts events over a sliding hour in 60 one-minute buckets: sum counts the
// events of the current minute and of the 59 before it (so between 59 and 60 minutes' worth).
// The zero value is ready to use.
type hourCounter struct {
	counts  [60]int
	minutes [60]int64 // the minute (Unix seconds / 60) each bucket counts
}

func (c *hourCounter) add(now time.Time, n int) {
	m := now.Unix() / 60
	b := m % 60
	if c.minutes[b] != m {
		c.minutes[b], c.counts[b] = m, 0
	}
	c.counts[b] += n
}

func (c *hourCounter) sum(now time.Time) int {
	m := now.Unix() / 60
	total := 0
	for b := range c.counts {
		if age := m - c.minutes[b]; age >= 0 && age < 60 {
			total += c.counts[b]
		}
	}
	return total
}

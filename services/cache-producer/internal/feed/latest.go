package feed

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Superseded tells, for a range of a topic, which records a later record of
// the same source key replaces: a rebuild in place that applies only each
// source key's last record of the range takes its generation from the old
// content straight to the new one, key by key, where applying every record
// would make readers go through the key's history again (a value it had an
// hour ago, a delete before a re-insert) with versions newer than what they
// hold. The result is the same: a projection depends only on each source
// key's last record.
type Superseded struct {
	last  map[string]int64 // source key → offset of its last record, for keys with two or more
	Until int64            // the range's end: records at or past it are never superseded
}

// Has reports whether rec, of the range, is followed by another record of
// its source key before the range's end.
func (s *Superseded) Has(rec *Record) bool {
	if s == nil || rec.Offset >= s.Until {
		return false
	}
	last, ok := s.last[rec.Key]
	return ok && last > rec.Offset
}

// Keys is how many source keys have more than one record in the range.
func (s *Superseded) Keys() int {
	if s == nil {
		return 0
	}
	return len(s.last)
}

// ReadSuperseded reads partition 0 of topic from from up to (not including)
// until, keys only (nothing is decoded), with a Reader of its own.
func ReadSuperseded(ctx context.Context, opts []kgo.Opt, topic string, from, until int64) (*Superseded, error) {
	s := &Superseded{last: map[string]int64{}, Until: until}
	if from >= until {
		return s, nil
	}
	rd, err := NewReader(Config{KafkaOpts: opts, Topic: topic, From: from, Until: until, KeysOnly: true, MaxRecords: 20_000})
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	// A key met once is stored as -(offset+1), then as its offset once met
	// again; the keys met once are dropped at the end.
	err = rd.Run(ctx, func(b Batch) error {
		for i := range b.Records {
			r := &b.Records[i]
			if _, ok := s.last[r.Key]; ok {
				s.last[r.Key] = r.Offset
			} else {
				s.last[r.Key] = -(r.Offset + 1)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the keys of %s from %d to %d: %w", topic, from, until, err)
	}
	for k, o := range s.last {
		if o < 0 {
			delete(s.last, k)
		}
	}
	return s, nil
}

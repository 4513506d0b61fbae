package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Crash recovery of open transactions.
//
// When kfake restarts from a data directory it was not shut down cleanly on, it replays its
// segments and treats every transaction still open at the crash as aborted, but it writes no abort
// marker for it: the aborted range is only in its memory. A read_committed client learns of an
// aborted transaction from the fetch response (producer ID and first offset) and drops that
// producer's transactional batches from there until it reads the producer's ABORT marker. With no
// marker it drops every later batch of that producer in the same response, including transactions
// committed after the restart by the same transactional producer (it keeps its producer ID), and
// the records come back on the next crash replay, which sees no marker and takes the next COMMIT as
// the end of the crashed transaction. Both happened in the chaos run: a rebuild that read the topic
// from its start did not see two committed updates of a key.
//
// repairOpenTransactions closes each such range by writing the missing ABORT marker, before any
// client can connect: kafkad runs it on a broker listening on a private port, then shuts that one
// down cleanly and serves on the real address.

// openAbort is an aborted transaction the broker reports with no ABORT marker after it.
type openAbort struct {
	topic       string
	partition   int32
	producerID  int64
	epoch       int16
	firstOffset int64
}

// repairOpenTransactions scans every partition of the broker at addr and writes an ABORT marker for
// each aborted transaction that has none. It returns what it wrote.
func repairOpenTransactions(ctx context.Context, addr string, log *slog.Logger) ([]openAbort, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequestRetries(3))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx)
	if err != nil {
		return nil, fmt.Errorf("start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx)
	if err != nil {
		return nil, fmt.Errorf("end offsets: %w", err)
	}
	var open []openAbort
	for _, td := range md.Topics.Sorted() {
		for _, pd := range td.Partitions.Sorted() {
			start, ok1 := starts.Lookup(td.Topic, pd.Partition)
			end, ok2 := ends.Lookup(td.Topic, pd.Partition)
			if !ok1 || !ok2 || start.Err != nil || end.Err != nil {
				return nil, fmt.Errorf("%s-%d: offsets unknown", td.Topic, pd.Partition)
			}
			if end.Offset <= start.Offset {
				continue
			}
			found, err := scanPartition(ctx, cl.Broker(int(pd.Leader)), td.Topic, td.ID, pd.Partition, start.Offset, end.Offset)
			if err != nil {
				return nil, fmt.Errorf("%s-%d: %w", td.Topic, pd.Partition, err)
			}
			open = append(open, found...)
		}
	}
	for _, o := range open {
		if err := writeAbortMarker(ctx, cl, o); err != nil {
			return nil, err
		}
		log.Warn("kafkad: wrote the abort marker of a transaction left open by a crash",
			"topic", o.topic, "partition", o.partition, "producer_id", o.producerID, "first_offset", o.firstOffset)
	}
	return open, nil
}

// scanPartition reads the partition read_committed from start to end and returns the aborted
// transactions the broker reports for which no ABORT marker of that producer follows.
func scanPartition(ctx context.Context, b *kgo.Broker, topic string, id kadm.TopicID, part int32, start, end int64) ([]openAbort, error) {
	pending := map[int64][]int64{} // producer ID -> first offsets of aborted transactions not yet closed
	reported := map[[2]int64]bool{}
	epochs := map[int64]int16{}
	offset := start
	for offset < end {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxBytes = 32 << 20
		req.IsolationLevel = 1 // read_committed: the broker lists the aborted transactions
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = part, offset, 32<<20
		rp.CurrentLeaderEpoch, rp.LastFetchedEpoch, rp.LogStartOffset = -1, -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		kresp, err := b.Request(rctx, req)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("fetch at %d: %w", offset, err)
		}
		resp := kresp.(*kmsg.FetchResponse)
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return nil, fmt.Errorf("fetch at %d: %w", offset, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return nil, fmt.Errorf("fetch at %d: unexpected response shape", offset)
		}
		p := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
			return nil, fmt.Errorf("fetch at %d: %w", offset, err)
		}
		for _, at := range p.AbortedTransactions {
			k := [2]int64{at.ProducerID, at.FirstOffset}
			if !reported[k] {
				reported[k] = true
				pending[at.ProducerID] = append(pending[at.ProducerID], at.FirstOffset)
				slices.Sort(pending[at.ProducerID])
			}
		}
		next, err := walkBatches(p.RecordBatches, func(rb *kmsg.RecordBatch) {
			epochs[rb.ProducerID] = rb.ProducerEpoch
			if !isAbortMarker(rb) {
				return
			}
			if firsts := pending[rb.ProducerID]; len(firsts) > 0 && firsts[0] <= rb.FirstOffset {
				pending[rb.ProducerID] = firsts[1:]
			}
		})
		if err != nil {
			return nil, fmt.Errorf("fetch at %d: %w", offset, err)
		}
		if next <= offset {
			break // nothing more below the end (the last stable offset, or a compacted tail)
		}
		offset = next
	}
	var open []openAbort
	for pid, firsts := range pending {
		for _, f := range firsts {
			open = append(open, openAbort{topic: topic, partition: part, producerID: pid, epoch: epochs[pid], firstOffset: f})
		}
	}
	slices.SortFunc(open, func(a, b openAbort) int { return cmp.Compare(a.firstOffset, b.firstOffset) })
	return open, nil
}

// walkBatches calls fn for each whole record batch in raw and returns the offset after the last.
func walkBatches(raw []byte, fn func(*kmsg.RecordBatch)) (int64, error) {
	next := int64(-1)
	for len(raw) >= 12 {
		size := 12 + int(int32(binary.BigEndian.Uint32(raw[8:12])))
		if size < 12 || size > len(raw) {
			break // a partial batch at the end of the response
		}
		var rb kmsg.RecordBatch
		if err := rb.ReadFrom(raw[:size]); err != nil {
			return 0, fmt.Errorf("record batch: %w", err)
		}
		fn(&rb)
		next = rb.FirstOffset + int64(rb.LastOffsetDelta) + 1
		raw = raw[size:]
	}
	return next, nil
}

// isAbortMarker says whether the batch is a transactional control batch holding an ABORT marker
// (a control record's key is int16 version, int16 type; type 0 is ABORT).
func isAbortMarker(rb *kmsg.RecordBatch) bool {
	const transactional, control = 0x10, 0x20
	if rb.Attributes&(transactional|control) != transactional|control {
		return false
	}
	var rec kmsg.Record
	if err := rec.ReadFrom(rb.Records); err != nil || len(rec.Key) < 4 {
		return false
	}
	return binary.BigEndian.Uint16(rec.Key[2:4]) == 0
}

// writeAbortMarker writes an ABORT control batch for o's producer to o's partition.
func writeAbortMarker(ctx context.Context, cl *kgo.Client, o openAbort) error {
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed = o.producerID, o.epoch, false
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = o.topic, []int32{o.partition}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(rctx, cl)
	if err != nil {
		return fmt.Errorf("%s-%d: write abort marker for producer %d: %w", o.topic, o.partition, o.producerID, err)
	}
	for _, rm := range resp.Markers {
		for _, rt := range rm.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return fmt.Errorf("%s-%d: write abort marker for producer %d: %w", o.topic, o.partition, o.producerID, err)
				}
			}
		}
	}
	return nil
}

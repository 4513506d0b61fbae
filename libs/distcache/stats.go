package distcache

import (
	"errors"
	"time"
)

// Stats is a snapshot of a Client's counters, per projection.
type Stats struct {
	Projections []ProjectionStats
}

// ProjectionStats are one projection's counters (monotonic unless noted).
type ProjectionStats struct {
	Name       string
	Generation int64 // gauge: the generation read locally (0: none)

	Hits         uint64 // local hits, including stale serves
	Misses       uint64 // reads that went to Redis
	NegativeHits uint64 // local hits on a key remembered as absent
	StaleServes  uint64 // local hits served while out of contact with Redis
	FetchErrors  uint64 // misses that Redis could not answer

	EvictedMaxTTL   uint64
	EvictedMaxBytes uint64
	EvictedMaxItems uint64

	Bytes int64 // gauge: local bytes (keys, values, headers)
	// Capacity is the bytes the local store's bigcache queues have
	// allocated: Bytes in use, the rest reserved up front (WithLocalPresize)
	// or dead space awaiting a compaction.
	Capacity int64 // gauge
	Items    int64 // gauge: local entries

	ChangesSeen uint64        // change-stream entries read (applied or not)
	Updates     uint64        // changes applied in place from the change stream
	Fills       uint64        // entries stored after a miss or warm start
	StreamLag   time.Duration // gauge: age of the last change applied when it was applied (0 when idle)
	Gaps        uint64        // times the stream position was trimmed away (each costs a revalidation)
	Replays     uint64        // changes applied while catching up after a lost connection or a start from a snapshot
	Cutovers    uint64        // generation switches followed
	Deletes     uint64        // projection deletes followed (local entries dropped)
	// UnknownEntries counts change-stream entries of a form this library does
	// not know (written by a newer writer); each one revalidated the projection.
	UnknownEntries uint64
	Rebuilds       uint64 // refetches of the held keys (gap revalidations and cutovers)
	Compactions    uint64 // local stores rebuilt to reclaim dead space
	// Reconnects counts the times the change-stream tail got back in contact
	// with Redis after losing it (each resumes from the last position).
	Reconnects uint64
	// FetchLatency is the latency of the Redis fetches of misses (one per
	// Get miss or GetMany batch, shared by concurrent misses of a key),
	// failed ones included.
	FetchLatency Histogram

	Connected bool // gauge: the tail is in contact with Redis
	Stale     bool // gauge: reads are being served stale (or not at all, past the bound)

	// Losses of Redis's data (see WithStalenessBound and the package README's
	// "When Redis loses data"). Losses counts them by how they were found:
	// index it with a LossReason.
	Losses [numLossReasons]uint64
	// InLoss (gauge): the Client is recovering from a loss: held entries are
	// served Stale, and an absence read from Redis is not an answer.
	InLoss bool
	// LossPendingKeys (gauge): held keys Redis has not given back yet since
	// the pointer came back.
	LossPendingKeys int64

	// TailFromReplica (gauge): the change-stream tail reads from a replica
	// (WithReplicaTail).
	TailFromReplica bool
	// TailReplicaFallbacks counts the tail's moves to the primary because its
	// replica failed or hung.
	TailReplicaFallbacks uint64

	// Snapshots (WithSnapshot).
	SnapshotWrites      uint64 // snapshot files written
	SnapshotWriteErrors uint64 // snapshot writes that failed (the previous file stays)
	SnapshotBytes       int64  // gauge: size of the last snapshot file written
	// SnapshotEntriesLoaded counts the entries loaded from the snapshot when
	// the projection started.
	SnapshotEntriesLoaded uint64
	// SnapshotRejections counts snapshot files found at start but not
	// loaded, by reason: index it with a SnapshotRejectReason.
	SnapshotRejections [numSnapshotRejectReasons]uint64
}

// LossesTotal returns the number of losses of Redis's data found, whatever
// the reason.
func (s ProjectionStats) LossesTotal() uint64 {
	var n uint64
	for _, v := range s.Losses {
		n += v
	}
	return n
}

// Evictions returns the eviction count for reason r.
func (s ProjectionStats) Evictions(r EvictReason) uint64 {
	switch r {
	case EvictMaxTTL:
		return s.EvictedMaxTTL
	case EvictMaxBytes:
		return s.EvictedMaxBytes
	case EvictMaxItems:
		return s.EvictedMaxItems
	}
	return 0
}

// Stats returns a snapshot of the counters of every followed projection.
func (c *Client) Stats() Stats {
	projs := *c.projs.Load()
	out := Stats{Projections: make([]ProjectionStats, 0, len(projs))}
	for name, p := range projs {
		ps := ProjectionStats{
			Name:            name,
			Hits:            p.hits.load(),
			Misses:          p.misses.Load(),
			NegativeHits:    p.negHits.Load(),
			StaleServes:     p.staleServes.load(),
			FetchErrors:     p.fetchErrors.Load(),
			EvictedMaxTTL:   p.evictTTL.Load(),
			EvictedMaxBytes: p.evictBytes.Load(),
			EvictedMaxItems: p.evictItems.Load(),
			ChangesSeen:     p.seen.Load(),
			Updates:         p.updates.Load(),
			Fills:           p.fills.Load(),
			StreamLag:       time.Duration(p.lagNanos.Load()),
			Gaps:            p.gaps.Load(),
			Replays:         p.replays.Load(),
			Cutovers:        p.cutovers.Load(),
			Deletes:         p.deletes.Load(),
			UnknownEntries:  p.unknownEntries.Load(),
			Rebuilds:        p.rebuilds.Load(),
			Compactions:     p.compactions.Load(),
			Reconnects:      p.reconnects.Load(),
			FetchLatency:    p.fetchLatency.snapshot(),
			Connected:       p.connected.Load(),
			Stale:           p.health.Load() != healthFresh,

			InLoss:               p.inLoss(),
			LossPendingKeys:      p.pendingCount.Load(),
			TailFromReplica:      p.tailReplica.Load(),
			TailReplicaFallbacks: p.tailFallbacks.Load(),

			SnapshotWrites:        p.snapWrites.Load(),
			SnapshotWriteErrors:   p.snapWriteErrors.Load(),
			SnapshotBytes:         p.snapBytes.Load(),
			SnapshotEntriesLoaded: p.snapLoaded.Load(),
		}
		for i := range ps.Losses {
			ps.Losses[i] = p.losses[i].Load()
		}
		for i := range ps.SnapshotRejections {
			ps.SnapshotRejections[i] = p.snapRejects[i].Load()
		}
		if st := p.store.Load(); st != nil {
			ps.Generation, ps.Bytes, ps.Items = st.gen, st.bytes.Load(), st.items.Load()
			ps.Capacity = int64(st.cache.Capacity())
		}
		out.Projections = append(out.Projections, ps)
	}
	return out
}

func joinErrs(errs []error) error { return errors.Join(errs...) }

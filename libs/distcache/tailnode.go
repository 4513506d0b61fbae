package distcache

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/redis/go-redis/v9"
)

// Tailing from replicas. With read replicas of a standalone primary
// (WithAddrs(primary, replica...), a RedisConfig with Replicas, or
// WithReplicas given single-node clients), each projection's tail reads its
// change stream from one replica, chosen by a hash of the projection's name
// and a number drawn per Client, so that thousands of edges spread their
// blocking XREADs over the replicas and leave the primary to the writers. A
// replica is used only while its replication link is up (INFO replication,
// when the ACL allows it).
// When a call to it fails or hangs (past the tail block plus at least a second), the
// tail falls back to the primary at once, and tries the replica again every
// replicaRetry.
//
// Replication lag loses nothing: the tail's position is an entry ID, and a
// replica that is behind returns the entries after it later. The tail's
// reads on a replica are consistent with one another (one node, applied in
// order), so a revalidation on a replica takes its position and its values
// there. Only a replica's view is ever doubted: a pointer that changed or
// vanished, a stream that vanished, was trimmed past the position or stays
// behind it for replicaRetry, is checked again on the primary (the tail
// moves there), which alone decides gaps, cutovers found by the pointer, and
// data losses (see loss.go). Sentinel's and Cluster's replica clients route
// each call to a node of their own choosing, so there the tail stays on the
// primary client.

// errReplicaNotLinked: a replica whose link to its primary is not up.
var errReplicaNotLinked = errors.New("replication link not up")

// tailReplicas returns the replicas a tail may read from: single-node
// clients, unless the primary is a Cluster or tailing from replicas is off.
func tailReplicas(cfg *config) []redis.UniversalClient {
	if !cfg.replicaTail {
		return nil
	}
	if _, ok := cfg.primary.(*redis.ClusterClient); ok {
		return nil
	}
	var out []redis.UniversalClient
	for _, r := range cfg.replicas {
		// A failover client (Sentinel) picks its node per connection: not a
		// node a tail can follow.
		if rc, ok := r.(*redis.Client); ok && rc.Options().Addr != "FailoverClient" {
			out = append(out, r)
		}
	}
	return out
}

// pickReplica returns the index of the replica the projection tails from
// (-1: none).
func (c *Client) pickReplica(name string) int {
	n := len(c.tailReplicas)
	if n == 0 {
		return -1
	}
	return int((xxhash.Sum64String(name) ^ c.seed) % uint64(n))
}

// replicaRetry is how long the tail stays on the primary before it tries its
// replica again.
func (p *projection) replicaRetry() time.Duration {
	return max(5*p.c.cfg.tailBlock, time.Second)
}

// probeTimeout bounds a replica's probe: a healthy replica answers INFO in
// well under a millisecond, and a hung one must not hold the tail (which
// keeps reading the primary) for long.
func (p *projection) probeTimeout() time.Duration {
	return min(max(p.c.cfg.tailBlock/2, 100*time.Millisecond), 500*time.Millisecond)
}

// callSlack bounds the tail's short calls to its node (the existence check),
// and what a blocking XREAD may take past its block.
func (p *projection) callSlack() time.Duration {
	return max(p.c.cfg.tailBlock, time.Second)
}

// tryReplica moves the tail to its replica if that replica answers and its
// replication link is up; otherwise it schedules the next try.
func (p *projection) tryReplica(ctx context.Context) {
	r := p.c.tailReplicas[p.replicaIdx]
	cctx, cancel := context.WithTimeout(ctx, p.probeTimeout())
	info, err := r.Info(cctx, "replication").Result()
	cancel()
	switch {
	case refused(err):
		// INFO not allowed (an ACL of +@read): the replica answered, and a
		// replica without its data is caught by catchup's checks.
		err = nil
	case err == nil && !replicaLinked(info):
		err = errReplicaNotLinked
	}
	if err != nil {
		p.replicaAt = time.Now().Add(p.replicaRetry())
		p.c.log.Debug("distcache: replica not usable for the tail; staying on the primary",
			slog.String(logKeyProjection, p.name), slog.Any(logKeyError, err))
		return
	}
	p.node, p.onReplica = r, true
	p.behindSince = time.Time{}
	p.tailReplica.Store(true)
	p.c.log.Info("distcache: tailing the change stream from a replica", slog.String(logKeyProjection, p.name),
		slog.String("replica", nodeName(r)))
}

// toPrimary moves the tail to the primary. failed: the replica failed (or
// hung), which is counted and logged; otherwise its view is being checked.
func (p *projection) toPrimary(why string, err error, failed bool) {
	if !p.onReplica {
		return
	}
	replica := p.node
	p.node, p.onReplica = p.c.cfg.primary, false
	p.tailReplica.Store(false)
	p.replicaAt = time.Now().Add(p.replicaRetry())
	p.needRunID = true
	attrs := []any{slog.String(logKeyProjection, p.name), slog.String("replica", nodeName(replica)), slog.String("why", why)}
	if failed {
		p.tailFallbacks.Add(1)
		p.c.log.Warn("distcache: replica failed; tailing the change stream from the primary",
			append(attrs, slog.Any(logKeyError, err))...)
		return
	}
	p.c.log.Debug("distcache: checking the replica's view on the primary", attrs...)
}

// replicaLinked reports whether an INFO replication reply is a replica's
// whose link to its primary is up and not in a full sync.
func replicaLinked(info string) bool {
	return infoField(info, "role") == "slave" && infoField(info, "master_link_status") == "up" &&
		infoField(info, "master_sync_in_progress") != "1"
}

func nodeName(rdb redis.UniversalClient) string {
	if rc, ok := rdb.(*redis.Client); ok {
		return rc.Options().Addr
	}
	return "(not a single node)"
}

package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/services/core-publisher/internal/producer"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// row is one outbox row as the relay reads it.
type row struct {
	id        int64
	final     bool // txid < pg_snapshot_xmin: committed, no older transaction still running
	aggregate string
	key       string
	version   int64
	op        string
	payload   []byte
	headers   []byte
	eventID   string
	createdAt time.Time
}

// fetchSQL reads the oldest rows by id with their finality. COALESCE keeps
// rows that break the schema's checks (if those were dropped) readable so
// they can become dead letters instead of stopping the relay.
const fetchSQL = `SELECT id, txid < pg_snapshot_xmin(pg_current_snapshot()),
	COALESCE(aggregate, ''), COALESCE(agg_key, ''), COALESCE(version, 0), COALESCE(op, ''),
	payload, COALESCE(headers, '{}'::jsonb), COALESCE(event_id::text, ''), COALESCE(created_at, now())
FROM distcache_outbox
WHERE NOT (COALESCE(aggregate, '') = ANY($2::text[]))
ORDER BY id
LIMIT $1`

// commitSQL moves dead rows ($2 ids, $3 reasons) to distcache_outbox_dead and
// deletes every handled row ($1), atomically (one statement).
const commitSQL = `WITH dead AS (
	SELECT * FROM unnest($2::bigint[], $3::text[]) AS d(id, reason)
), moved AS (
	INSERT INTO distcache_outbox_dead (id, txid, aggregate, agg_key, version, op, payload, headers, event_id, created_at, reason)
	SELECT o.id, o.txid, COALESCE(o.aggregate, ''), COALESCE(o.agg_key, ''), COALESCE(o.version, 0), COALESCE(o.op, ''),
		o.payload, COALESCE(o.headers, '{}'::jsonb), COALESCE(o.event_id, gen_random_uuid()), COALESCE(o.created_at, now()), d.reason
	FROM distcache_outbox o JOIN dead d USING (id)
	ON CONFLICT (id) DO NOTHING
)
DELETE FROM distcache_outbox WHERE id = ANY($1::bigint[])`

// passResult describes one relay pass.
type passResult struct {
	published int
	dead      int
	full      bool // the read returned a full batch: more may be waiting
	heldBack  bool // a committed row was not final yet
}

// finalPrefix returns the longest prefix of rows (in id order) that are all
// final, and whether a row was held back.
func finalPrefix(rows []row) ([]row, bool) {
	for i := range rows {
		if !rows[i].final {
			return rows[:i], true
		}
	}
	return rows, false
}

// envelope converts a row to an event envelope and validates it; the error
// is the dead-letter reason.
func envelope(rw *row, maxBytes int) (events.Envelope, error) {
	e := events.Envelope{
		Aggregate:  rw.aggregate,
		Key:        rw.key,
		Version:    rw.version,
		Op:         events.Op(rw.op),
		EventID:    rw.eventID,
		SourceTime: rw.createdAt,
	}
	if rw.payload != nil && !(e.Op == events.OpDelete && string(rw.payload) == "null") {
		e.Payload = json.RawMessage(rw.payload)
	}
	if len(rw.headers) > 0 {
		var h map[string]string
		if err := json.Unmarshal(rw.headers, &h); err != nil {
			return e, fmt.Errorf("headers: not a JSON object of strings: %w", err)
		}
		if len(h) > 0 {
			e.Headers = h
		}
	}
	if err := e.ValidateWithLimit(maxBytes); err != nil {
		return e, err
	}
	return e, nil
}

// pass reads one batch, produces it, waits for the acks and deletes it.
func (r *Relay) pass(ctx context.Context, conn *pgx.Conn) (passResult, error) {
	start := time.Now()
	var res passResult
	rows, err := r.fetch(ctx, conn)
	if err != nil {
		r.o.metrics.Errors.WithLabelValues("read").Inc()
		return res, err
	}
	res.full = len(rows) == r.o.batchSize
	if len(rows) == 0 {
		r.o.metrics.Lag.Set(0)
		return res, nil
	}
	r.o.metrics.Lag.Set(max(0, time.Since(rows[0].createdAt).Seconds()))
	rows, res.heldBack = finalPrefix(rows)
	if res.heldBack {
		res.full = false
	}
	if len(rows) == 0 {
		return res, nil
	}

	var (
		recs       = make([]*kgo.Record, 0, len(rows))
		recAgg     = make([]string, 0, len(rows))
		recCreated = make([]time.Time, 0, len(rows))
		done       = make([]int64, 0, len(rows))
		deadIDs    []int64
		deadWhy    []string
		deadAgg    []string
		topics     = map[string]error{}
	)
	for i := range rows {
		rw := &rows[i]
		e, err := envelope(rw, r.o.maxEventBytes)
		var rec *kgo.Record
		if err == nil {
			rec, err = events.ToRecord(e, r.o.topicPrefix)
		}
		if err != nil {
			deadIDs = append(deadIDs, rw.id)
			deadWhy = append(deadWhy, err.Error())
			deadAgg = append(deadAgg, rw.aggregate)
			done = append(done, rw.id)
			continue
		}
		terr, checked := topics[rec.Topic]
		if !checked {
			terr = r.prod.EnsureTopic(ctx, rec.Topic)
			topics[rec.Topic] = terr
			if terr != nil && !errors.Is(terr, producer.ErrTopicUnsuitable) {
				r.o.metrics.Errors.WithLabelValues("topic").Inc()
				return res, fmt.Errorf("ensure topic: %w", terr)
			}
			if terr != nil {
				r.o.metrics.Errors.WithLabelValues("topic").Inc()
				r.block(rw.aggregate, terr)
			}
		}
		if terr != nil {
			continue // left in the outbox until the topic is fixed
		}
		recs = append(recs, rec)
		recAgg = append(recAgg, rw.aggregate)
		recCreated = append(recCreated, rw.createdAt)
		done = append(done, rw.id)
	}

	if err := r.prod.Produce(ctx, recs); err != nil {
		r.o.metrics.Errors.WithLabelValues("produce").Inc()
		return res, err
	}
	acked := time.Now()
	for i := range recs {
		r.o.metrics.EventsPublished.WithLabelValues(recAgg[i]).Inc()
		r.o.metrics.CommitToAck.Observe(acked.Sub(recCreated[i]).Seconds())
	}
	if _, err := conn.Exec(ctx, commitSQL, done, deadIDs, deadWhy); err != nil {
		r.o.metrics.Errors.WithLabelValues("commit").Inc()
		return res, fmt.Errorf("delete published rows: %w", err)
	}
	for i, id := range deadIDs {
		r.o.metrics.DeadLetters.WithLabelValues(deadAgg[i]).Inc()
		r.o.log.Warn("outbox row moved to dead letters", "id", id, "aggregate", deadAgg[i], "reason", deadWhy[i])
	}
	res.published, res.dead = len(recs), len(deadIDs)
	r.o.metrics.BatchSeconds.Observe(time.Since(start).Seconds())
	return res, nil
}

func (r *Relay) block(aggregate string, err error) {
	r.mu.Lock()
	r.blocked[aggregate] = time.Now().Add(30 * time.Second)
	r.mu.Unlock()
	r.o.log.Error("aggregate paused: its topic is refused", "aggregate", aggregate, "err", err)
}

func (r *Relay) blockedAggregates() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for a, until := range r.blocked {
		if now.After(until) {
			delete(r.blocked, a)
		}
	}
	return slices.Sorted(maps.Keys(r.blocked))
}

func (r *Relay) fetch(ctx context.Context, conn *pgx.Conn) ([]row, error) {
	blocked := r.blockedAggregates()
	if blocked == nil {
		blocked = []string{}
	}
	rs, err := conn.Query(ctx, fetchSQL, r.o.batchSize, blocked)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	out := make([]row, 0, r.o.batchSize)
	for rs.Next() {
		var rw row
		if err := rs.Scan(&rw.id, &rw.final, &rw.aggregate, &rw.key, &rw.version, &rw.op,
			&rw.payload, &rw.headers, &rw.eventID, &rw.createdAt); err != nil {
			rs.Close()
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		out = append(out, rw)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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
	published int64 // the key's version in distcache_outbox_published (0: none)
}

// finalExpr is the commit fence: the row's transaction is older than every
// transaction still running when the statement took its snapshot.
const finalExpr = `txid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))`

// publishedExpr reads the row's key's published version
// (distcache_outbox_published), 0 when the key was never published.
const publishedExpr = `COALESCE((SELECT p.version FROM distcache_outbox_published p
		WHERE p.aggregate = o.aggregate AND p.agg_key = o.agg_key), 0)`

// fetchVariant returns the fetch statement q without the commit fence
// (every visible row counts as final) and/or without the published version
// (read as 0: the writer owns ordering).
func fetchVariant(q string, fence, versionCheck bool) string {
	if !fence {
		q = strings.Replace(q, finalExpr, "true", 1)
	}
	if !versionCheck {
		q = strings.Replace(q, publishedExpr, "0", 1)
	}
	return q
}

// fetchSQL reads the oldest rows by id with their finality. COALESCE keeps
// rows that break the schema's checks (if those were dropped) readable so
// they can become dead letters instead of stopping the relay. The ids it
// skips ($3 here, $1 in commitFetchSQL) are a NOT IN subquery, which
// PostgreSQL hashes: "NOT (id = ANY($n))" compares each row with every
// element of a parameter array (it hashes constant arrays only), so a relay
// that had fallen behind and skipped a full batch of 2,000 ids spent 42 ms
// of each read on it (3 ms hashed), and caught up more slowly the further
// behind it was.
const fetchSQL = `SELECT id, txid < (SELECT pg_snapshot_xmin(pg_current_snapshot())),
	COALESCE(aggregate, ''), COALESCE(agg_key, ''), COALESCE(version, 0), COALESCE(op, ''),
	payload, COALESCE(headers, '{}'::jsonb), COALESCE(event_id::text, ''), COALESCE(created_at, now()),
	` + publishedExpr + `
FROM distcache_outbox o
WHERE NOT (COALESCE(aggregate, '') = ANY($2::text[])) AND id NOT IN (SELECT unnest($3::bigint[]))
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
), published AS (
	` + upsertPublished + `
)
DELETE FROM distcache_outbox WHERE id = ANY($1::bigint[])`

// upsertPublished records the highest version published per key: $4
// aggregates, $5 keys, $6 versions, one entry per key (ON CONFLICT may not
// touch a row twice in one statement).
const upsertPublished = `INSERT INTO distcache_outbox_published AS p (aggregate, agg_key, version)
	SELECT * FROM unnest($4::text[], $5::text[], $6::bigint[])
	ON CONFLICT (aggregate, agg_key) DO UPDATE SET version = GREATEST(p.version, EXCLUDED.version)`

// commitFetchSQL is commitSQL ($1 handled ids, $2/$3 dead ids and reasons,
// $6/$7/$8 the published versions) and fetchSQL ($4 limit, $5 blocked
// aggregates) in one statement: one round trip per batch when the relay is
// not pipelining. The read sees the statement's snapshot, from before the
// delete and the published versions' update, so it excludes $1 and the
// caller overlays the committed batch's versions (batch.versions).
var commitFetchSQL = `WITH dead AS (
	SELECT * FROM unnest($2::bigint[], $3::text[]) AS d(id, reason)
), moved AS (
	INSERT INTO distcache_outbox_dead (id, txid, aggregate, agg_key, version, op, payload, headers, event_id, created_at, reason)
	SELECT o.id, o.txid, COALESCE(o.aggregate, ''), COALESCE(o.agg_key, ''), COALESCE(o.version, 0), COALESCE(o.op, ''),
		o.payload, COALESCE(o.headers, '{}'::jsonb), COALESCE(o.event_id, gen_random_uuid()), COALESCE(o.created_at, now()), d.reason
	FROM distcache_outbox o JOIN dead d USING (id)
	ON CONFLICT (id) DO NOTHING
), published AS (
	` + upsertPublishedAt7 + `
), deleted AS (
	DELETE FROM distcache_outbox WHERE id = ANY($1::bigint[])
)
SELECT id, txid < (SELECT pg_snapshot_xmin(pg_current_snapshot())),
	COALESCE(aggregate, ''), COALESCE(agg_key, ''), COALESCE(version, 0), COALESCE(op, ''),
	payload, COALESCE(headers, '{}'::jsonb), COALESCE(event_id::text, ''), COALESCE(created_at, now()),
	` + publishedExpr + `
FROM distcache_outbox o
WHERE NOT (COALESCE(aggregate, '') = ANY($5::text[])) AND id NOT IN (SELECT unnest($1::bigint[]))
ORDER BY id
LIMIT $4`

// upsertPublishedAt7 is upsertPublished with its arrays at $6, $7 and $8.
var upsertPublishedAt7 = strings.NewReplacer("$4::", "$6::", "$5::", "$7::", "$6::", "$8::").Replace(upsertPublished)

// batch is one prepared batch: the final prefix of the rows read, turned
// into records and dead letters.
type batch struct {
	start      time.Time
	read       time.Duration
	recs       []*kgo.Record
	recID      []int64
	recAgg     []string
	recCreated []time.Time
	recKey     []string // the row's key, for distcache_outbox_published
	recVer     []int64
	// versions is the highest version per key (aggregate + "\x00" + key)
	// among recs: reads that cannot see this batch's update of
	// distcache_outbox_published yet (pipelined, or in the statement that
	// commits it) check against it.
	versions map[string]int64
	done     []int64 // ids to delete once recs are acknowledged: published and dead rows
	deadIDs  []int64
	deadWhy  []string
	deadAgg  []string
	full     bool // the read returned a full batch: more may be waiting
	heldBack bool // a committed row was not final yet
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
	e, err := envelopeUnchecked(rw)
	if err != nil {
		return e, err
	}
	if err := e.ValidateWithLimit(maxBytes); err != nil {
		return e, err
	}
	return e, nil
}

// envelopeUnchecked converts a row without validating the result.
func envelopeUnchecked(rw *row) (events.Envelope, error) {
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
	if len(rw.headers) > 0 && string(rw.headers) != "{}" {
		var h map[string]string
		if err := json.Unmarshal(rw.headers, &h); err != nil {
			return e, fmt.Errorf("headers: not a JSON object of strings: %w", err)
		}
		if len(h) > 0 {
			e.Headers = h
		}
	}
	return e, nil
}

// record converts a row to a Kafka record; the error is the dead-letter
// reason. It validates each payload once (ToRecord's validation) and checks
// the size itself.
func record(rw *row, maxBytes int, topicPrefix string) (*kgo.Record, error) {
	e, err := envelopeUnchecked(rw)
	if err != nil {
		return nil, err
	}
	rec, err := events.ToRecord(e, topicPrefix)
	if err != nil {
		return nil, err
	}
	if n := e.Size(); maxBytes > 0 && n > maxBytes {
		return nil, &events.ValidationError{Field: events.FieldSize, Reason: fmt.Sprintf("%d bytes, limit %d", n, maxBytes)}
	}
	return rec, nil
}

// readBatch reads the next batch, skipping the rows of inflight (a batch
// still being produced, or nil), and prepares it.
func (r *Relay) readBatch(ctx context.Context, conn *pgx.Conn, inflight *batch) (*batch, error) {
	var exclude []int64
	if inflight != nil {
		exclude = inflight.done
	}
	return r.readBatchAfter(ctx, conn, exclude, inflight, nil, time.Time{})
}

// commitAndRead deletes done's rows (acknowledged at acked) and reads the
// next batch in one statement.
func (r *Relay) commitAndRead(ctx context.Context, conn *pgx.Conn, done *batch, acked time.Time) (*batch, error) {
	return r.readBatchAfter(ctx, conn, done.done, done, done, acked)
}

// readBatchAfter reads and prepares a batch. prev is the batch before it
// whose published versions the read cannot see (in flight, or committed by
// the same statement), or nil; done is the batch this statement commits.
func (r *Relay) readBatchAfter(ctx context.Context, conn *pgx.Conn, exclude []int64, prev, done *batch, acked time.Time) (*batch, error) {
	b := &batch{start: time.Now()}
	discardNotifications(conn)
	rows, err := r.fetch(ctx, conn, exclude, done)
	if err != nil {
		if done != nil {
			r.o.metrics.Errors.WithLabelValues("commit").Inc()
			return nil, fmt.Errorf("delete published rows: %w", err)
		}
		r.o.metrics.Errors.WithLabelValues("read").Inc()
		return nil, err
	}
	if done != nil {
		r.committed(done, acked)
	}
	b.read = time.Since(b.start)
	b.full = len(rows) == r.o.batchSize
	if len(rows) == 0 {
		r.o.metrics.Reads.WithLabelValues("empty").Inc()
	} else {
		r.o.metrics.Reads.WithLabelValues("rows").Inc()
	}
	switch {
	case exclude != nil && done == nil:
		// a pipelined read: its first row is not the oldest
	case len(r.blockedAggregates()) > 0:
		// refused models' rows are skipped by the read but still count
		if err := r.updateLag(ctx, conn); err != nil {
			return nil, err
		}
	case len(rows) == 0:
		r.o.metrics.Lag.Set(0)
	default:
		r.o.metrics.Lag.Set(max(0, time.Since(rows[0].createdAt).Seconds()))
	}
	if len(rows) == 0 {
		return b, nil
	}
	rows, b.heldBack = finalPrefix(rows)
	if b.heldBack {
		b.full = false
	}
	b.recs = make([]*kgo.Record, 0, len(rows))
	b.recID = make([]int64, 0, len(rows))
	b.recAgg = make([]string, 0, len(rows))
	b.recCreated = make([]time.Time, 0, len(rows))
	b.recKey = make([]string, 0, len(rows))
	b.recVer = make([]int64, 0, len(rows))
	if r.o.versionCheck {
		b.versions = make(map[string]int64, len(rows))
	}
	b.done = make([]int64, 0, len(rows))
	dead := func(rw *row, reason string) {
		b.deadIDs = append(b.deadIDs, rw.id)
		b.deadWhy = append(b.deadWhy, reason)
		b.deadAgg = append(b.deadAgg, rw.aggregate)
		b.done = append(b.done, rw.id)
	}
	topics := map[string]error{}
	catalogRead := false
	for i := range rows {
		rw := &rows[i]
		if known, err := r.knownModel(ctx, rw.aggregate, &catalogRead); err != nil {
			return nil, err
		} else if !known {
			dead(rw, fmt.Sprintf("unknown model %q: %s", rw.aggregate, unknownModelHint))
			continue
		}
		rec, err := record(rw, r.o.maxEventBytes, r.o.topicPrefix)
		if err != nil {
			dead(rw, err.Error())
			continue
		}
		var vkey string
		if r.o.versionCheck {
			vkey = rw.aggregate + "\x00" + rw.key
			last := max(rw.published, b.versions[vkey])
			if prev != nil {
				last = max(last, prev.versions[vkey])
			}
			if rw.version <= last {
				dead(rw, fmt.Sprintf("%s: version %d does not exceed version %d already published for key %q",
					ErrVersionNotNewer, rw.version, last, rw.key))
				continue
			}
		}
		terr, checked := topics[rec.Topic]
		if !checked {
			terr = r.prod.EnsureTopic(ctx, rec.Topic)
			topics[rec.Topic] = terr
			if terr != nil {
				r.o.metrics.Errors.WithLabelValues("topic").Inc()
				if !errors.Is(terr, producer.ErrTopicUnsuitable) {
					return nil, fmt.Errorf("ensure topic: %w", terr)
				}
				r.block(rw.aggregate, terr)
			}
		}
		if terr != nil {
			continue // left in the outbox until the topic is fixed
		}
		b.recs = append(b.recs, rec)
		b.recID = append(b.recID, rw.id)
		b.recAgg = append(b.recAgg, rw.aggregate)
		b.recCreated = append(b.recCreated, rw.createdAt)
		b.recKey = append(b.recKey, rw.key)
		b.recVer = append(b.recVer, rw.version)
		if b.versions != nil {
			b.versions[vkey] = rw.version
		}
		b.done = append(b.done, rw.id)
	}
	return b, nil
}

// unknownModelHint ends the dead-letter reason of a row whose aggregate is no
// model.
const unknownModelHint = "no table has the distcache_capture trigger for it and the publisher's configuration does not list it (rows of unregistered models get no topic)"

// published returns the highest version published per key among b's
// records, as the arrays of upsertPublished (one entry per key); none
// without the version check, which then keeps no published versions.
func (b *batch) published() (aggs, keys []string, versions []int64) {
	if b.versions == nil {
		return []string{}, []string{}, []int64{}
	}
	n := len(b.recs)
	aggs, keys, versions = make([]string, 0, n), make([]string, 0, n), make([]int64, 0, n)
	at := make(map[string]int, n)
	for i := range b.recs {
		k := b.recAgg[i] + "\x00" + b.recKey[i]
		if j, ok := at[k]; ok {
			versions[j] = max(versions[j], b.recVer[i])
			continue
		}
		at[k] = len(keys)
		aggs, keys, versions = append(aggs, b.recAgg[i]), append(keys, b.recKey[i]), append(versions, b.recVer[i])
	}
	return aggs, keys, versions
}

// settle applies what the broker said of b's records: those it refused
// (by index in b.recs, with the reason) move to the batch's dead rows, to be
// deleted from the outbox and kept in distcache_outbox_dead like rows the
// relay found invalid; those of a held topic (heldTopics) leave the batch
// and stay in the outbox, unpublished, until the topic takes writes.
func (b *batch) settle(why map[int]string, heldTopics map[string]error) {
	if len(why) == 0 && len(heldTopics) == 0 {
		return
	}
	var keepIDs map[int64]bool
	if len(heldTopics) > 0 {
		keepIDs = map[int64]bool{}
	}
	keep := 0
	for i := range b.recs {
		if reason, ok := why[i]; ok {
			b.deadIDs = append(b.deadIDs, b.recID[i])
			b.deadWhy = append(b.deadWhy, reason)
			b.deadAgg = append(b.deadAgg, b.recAgg[i])
			continue
		}
		if _, held := heldTopics[b.recs[i].Topic]; held {
			keepIDs[b.recID[i]] = true
			continue
		}
		b.recs[keep], b.recID[keep], b.recAgg[keep], b.recCreated[keep] = b.recs[i], b.recID[i], b.recAgg[i], b.recCreated[i]
		b.recKey[keep], b.recVer[keep] = b.recKey[i], b.recVer[i]
		keep++
	}
	b.recs, b.recID, b.recAgg, b.recCreated = b.recs[:keep], b.recID[:keep], b.recAgg[:keep], b.recCreated[:keep]
	b.recKey, b.recVer = b.recKey[:keep], b.recVer[:keep]
	if len(keepIDs) > 0 {
		b.done = slices.DeleteFunc(b.done, func(id int64) bool { return keepIDs[id] })
	}
}

// holdTopics drops from b (not produced yet) the records of heldTopics,
// leaving their rows in the outbox.
func (b *batch) holdTopics(heldTopics map[string]error) { b.settle(nil, heldTopics) }

// commit deletes a batch's rows after its records were acknowledged at
// acked, moving its dead rows to distcache_outbox_dead.
func (r *Relay) commit(ctx context.Context, conn *pgx.Conn, b *batch, acked time.Time) error {
	if len(b.done) == 0 {
		return nil
	}
	aggs, keys, vers := b.published()
	if _, err := conn.Exec(ctx, commitSQL, b.done, b.deadIDs, b.deadWhy, aggs, keys, vers); err != nil {
		r.o.metrics.Errors.WithLabelValues("commit").Inc()
		return fmt.Errorf("delete published rows: %w", err)
	}
	r.committed(b, acked)
	return nil
}

// committed accounts for a batch whose rows were deleted.
func (r *Relay) committed(b *batch, acked time.Time) {
	for i := range b.recs {
		r.o.metrics.EventsPublished.WithLabelValues(b.recAgg[i]).Inc()
		r.o.metrics.CommitToAck.Observe(acked.Sub(b.recCreated[i]).Seconds())
	}
	r.releasePublished(b.recAgg)
	for i, id := range b.deadIDs {
		r.o.metrics.DeadLetters.WithLabelValues(b.deadAgg[i]).Inc()
		r.o.log.Warn("outbox row moved to dead letters", "id", id, "aggregate", b.deadAgg[i], "reason", b.deadWhy[i])
	}
	r.o.metrics.BatchSeconds.Observe(time.Since(b.start).Seconds())
	r.o.log.Debug("relay batch", "published", len(b.recs), "dead", len(b.deadIDs),
		"read", b.read, "acked_after", acked.Sub(b.start), "deleted_after", time.Since(b.start))
}

// block holds aggregate back (its rows are skipped by reads) for 30s, after
// which its topic is checked again; the model stays listed as held (Status,
// distcache_publisher_models_held) until its topic is accepted.
func (r *Relay) block(aggregate string, err error) {
	r.mu.Lock()
	r.blocked[aggregate] = time.Now().Add(30 * time.Second)
	if _, ok := r.held[aggregate]; !ok {
		r.held[aggregate] = HeldModel{Aggregate: aggregate, Reason: err.Error(), Since: time.Now()}
	}
	r.mu.Unlock()
	r.o.metrics.ModelsHeld.WithLabelValues(aggregate).Set(1)
	r.o.log.Error("aggregate paused: its topic is refused", "aggregate", aggregate, "err", err)
}

// releaseAll ends every hold.
func (r *Relay) releaseAll() {
	r.mu.Lock()
	held := slices.Collect(maps.Keys(r.held))
	clear(r.held)
	clear(r.blocked)
	r.mu.Unlock()
	for _, a := range held {
		r.o.metrics.ModelsHeld.WithLabelValues(a).Set(0)
	}
}

// releasePublished ends the holds of the aggregates in aggs (of a committed
// batch): their topic took their records.
func (r *Relay) releasePublished(aggs []string) {
	r.mu.Lock()
	if len(r.held) == 0 {
		r.mu.Unlock()
		return
	}
	var released []string
	for _, a := range aggs {
		if _, ok := r.held[a]; ok {
			delete(r.held, a)
			released = append(released, a)
		}
	}
	r.mu.Unlock()
	for _, a := range released {
		r.o.metrics.ModelsHeld.WithLabelValues(a).Set(0)
		r.o.log.Info("aggregate released: its topic takes its events", "aggregate", a)
	}
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

// fetch reads rows (see fetchSQL); with done it also deletes done's rows
// (commitFetchSQL).
func (r *Relay) fetch(ctx context.Context, conn *pgx.Conn, exclude []int64, done *batch) ([]row, error) {
	blocked := r.blockedAggregates()
	if blocked == nil {
		blocked = []string{}
	}
	if exclude == nil {
		exclude = []int64{}
	}
	var rs pgx.Rows
	var err error
	if done != nil {
		aggs, keys, vers := done.published()
		rs, err = conn.Query(ctx, r.commitFetchSQL, done.done, done.deadIDs, done.deadWhy, r.o.batchSize, blocked, aggs, keys, vers)
	} else {
		rs, err = conn.Query(ctx, r.fetchSQL, r.o.batchSize, blocked, exclude)
	}
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	// Sized by the previous read: a batch of batchSize rows is ~340 KB, and preallocating that for
	// every read (most hold a few rows at a steady rate) was a third of the publisher's CPU at
	// 1,000 events/s, in zeroing the allocation and in the garbage collector; a backlog's reads
	// are full and keep their size.
	out := make([]row, 0, min(r.o.batchSize, max(16, int(r.lastRead.Load()))))
	for rs.Next() {
		var rw row
		if err := rs.Scan(&rw.id, &rw.final, &rw.aggregate, &rw.key, &rw.version, &rw.op,
			&rw.payload, &rw.headers, &rw.eventID, &rw.createdAt, &rw.published); err != nil {
			rs.Close()
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		out = append(out, rw)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	r.lastRead.Store(int64(len(out)))
	return out, nil
}

// discardNotifications drops the outbox notifications conn has received
// and not yet handed out. Each was sent by a transaction that committed
// before the read about to start, which therefore sees its rows (or holds
// them back behind the xid8 fence, which looks again on its own). Left
// queued, each woke a read of its own after the relay went idle: at 1,000
// events/s in small transactions, about two reads per batch, nearly every
// second one empty. It never blocks: a done context makes pgx return the
// queued notifications and nothing more.
func discardNotifications(conn *pgx.Conn) {
	for {
		if n, err := conn.WaitForNotification(doneCtx); err != nil || n == nil {
			return
		}
	}
}

// doneCtx is a context that is already done.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Outbox table, versions table and notification channel names
// (docs/architecture.md, "Outbox row"); the migrations module creates them.
const (
	OutboxTable         = "distcache_outbox"
	OutboxVersionsTable = "distcache_outbox_versions"
	OutboxChannel       = "distcache_outbox"
)

// ErrStaleVersion is returned by OutboxWriter.Write for an envelope whose
// explicit Version is not greater than the key's current version.
var ErrStaleVersion = errors.New("event version not newer than the key's current version")

// Querier is the part of a pgx transaction the outbox writer uses; pgx.Tx
// implements it. Pass the caller's transaction: the outbox rows then commit
// or roll back with the business change. When the Querier also has
// SendBatch (pgx.Tx does), the events of one Write go in one round trip.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// batchSender is the optional batching capability of a Querier.
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var (
	_ Querier     = pgx.Tx(nil)
	_ batchSender = pgx.Tx(nil)
)

// OutboxWriter writes events into the outbox table inside the caller's
// transaction, exactly as the distcache_capture() trigger does: it bumps the
// per-key version in distcache_outbox_versions (whose row lock serialises
// writers of one key, so versions follow commit order per key), inserts the
// outbox row and notifies channel distcache_outbox with the aggregate name
// (delivered at commit). The row's id is drawn after the version row lock is
// won, so for one key id order, version order and commit order agree (the
// relay publishes in id order and relies on it). It is safe for concurrent
// use.
type OutboxWriter struct {
	maxBytes int
}

// OutboxOption configures an OutboxWriter.
type OutboxOption func(*OutboxWriter)

// WithMaxEventBytes sets the size limit of one event (see Envelope.Size).
// Default DefaultMaxEventBytes; n <= 0 disables the check.
func WithMaxEventBytes(n int) OutboxOption {
	return func(w *OutboxWriter) { w.maxBytes = n }
}

// NewOutboxWriter returns an OutboxWriter configured by opts.
func NewOutboxWriter(opts ...OutboxOption) (*OutboxWriter, error) {
	w := &OutboxWriter{maxBytes: DefaultMaxEventBytes}
	for _, o := range opts {
		o(w)
	}
	return w, nil
}

// insertSQL bumps (or, for an explicit version, raises) the key's version and
// inserts the outbox row in one statement. $7 is NULL to allocate the next
// version; otherwise it must exceed the current one or nothing is inserted.
const insertSQL = `WITH v AS (
	INSERT INTO distcache_outbox_versions AS cur (aggregate, agg_key, version)
	VALUES ($1, $2, COALESCE($7::bigint, 1))
	ON CONFLICT (aggregate, agg_key) DO UPDATE
		SET version = CASE WHEN $7::bigint IS NULL THEN cur.version + 1 ELSE excluded.version END
		WHERE $7::bigint IS NULL OR cur.version < excluded.version
	RETURNING version
)
INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers, event_id, created_at)
SELECT $1, $2, v.version, $3, $4::jsonb, $5::jsonb, $6::uuid, COALESCE($8::timestamptz, now()) FROM v`

const notifySQL = `SELECT pg_notify('` + OutboxChannel + `', $1)`

// Write validates every event, then writes them in order within tx. An
// envelope's Version 0 means "allocate the next version of the key"; an
// explicit Version must be newer than the key's current one (else
// ErrStaleVersion). An empty EventID gets a fresh UUID and a zero SourceTime
// the transaction's time. Nothing is written when any event is invalid; on a
// database error the caller must roll the transaction back.
func (w *OutboxWriter) Write(ctx context.Context, tx Querier, events ...Envelope) error {
	if len(events) == 0 {
		return nil
	}
	args := make([][]any, len(events))
	for i := range events {
		e := &events[i]
		if err := e.validate(w.maxBytes, true); err != nil {
			if len(events) > 1 {
				return fmt.Errorf("outbox write: event %d: %w", i, err)
			}
			return fmt.Errorf("outbox write: %w", err)
		}
		a, err := insertArgs(e)
		if err != nil {
			return fmt.Errorf("outbox write: event %d: %w", i, err)
		}
		args[i] = a
	}
	aggregates := make([]string, 0, 1)
	for i := range events {
		if !containsString(aggregates, events[i].Aggregate) {
			aggregates = append(aggregates, events[i].Aggregate)
		}
	}

	if bs, ok := tx.(batchSender); ok {
		return w.writeBatch(ctx, bs, events, args, aggregates)
	}
	for i := range events {
		tag, err := tx.Exec(ctx, insertSQL, args[i]...)
		if err := insertResult(&events[i], tag, err); err != nil {
			return err
		}
	}
	for _, agg := range aggregates {
		if _, err := tx.Exec(ctx, notifySQL, agg); err != nil {
			return fmt.Errorf("outbox write: notify: %w", err)
		}
	}
	return nil
}

func (w *OutboxWriter) writeBatch(ctx context.Context, bs batchSender, events []Envelope, args [][]any, aggregates []string) (err error) {
	b := &pgx.Batch{}
	for i := range events {
		b.Queue(insertSQL, args[i]...)
	}
	for _, agg := range aggregates {
		b.Queue(notifySQL, agg)
	}
	res := bs.SendBatch(ctx, b)
	defer func() {
		if cerr := res.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("outbox write: %w", cerr)
		}
	}()
	for i := range events {
		tag, err := res.Exec()
		if err := insertResult(&events[i], tag, err); err != nil {
			return err
		}
	}
	for range aggregates {
		if _, err := res.Exec(); err != nil {
			return fmt.Errorf("outbox write: notify: %w", err)
		}
	}
	return nil
}

func insertResult(e *Envelope, tag pgconn.CommandTag, err error) error {
	if err != nil {
		return fmt.Errorf("outbox write %s/%s: %w", e.Aggregate, e.Key, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("outbox write %s/%s version %d: %w", e.Aggregate, e.Key, e.Version, ErrStaleVersion)
	}
	return nil
}

func insertArgs(e *Envelope) ([]any, error) {
	var version, sourceTime, payload any
	if e.Version > 0 {
		version = e.Version
	}
	if !e.SourceTime.IsZero() {
		sourceTime = e.SourceTime
	}
	if e.Op == OpUpsert {
		payload = []byte(e.Payload)
	}
	headers := "{}"
	if len(e.Headers) > 0 {
		b, err := json.Marshal(e.Headers)
		if err != nil {
			return nil, fmt.Errorf("encode headers: %w", err)
		}
		headers = string(b)
	}
	id := uuid.New()
	if e.EventID != "" {
		var err error
		if id, err = uuid.Parse(e.EventID); err != nil {
			return nil, invalid(FieldEventID, err.Error())
		}
	}
	return []any{e.Aggregate, e.Key, string(e.Op), payload, headers, id, version, sourceTime}, nil
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

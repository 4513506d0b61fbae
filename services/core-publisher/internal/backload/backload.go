// Package backload publishes the current state of a model's table: every
// row, read in primary-key chunks, as a full-state upsert event.
//
// Backload rows go through the outbox itself, so they are ordered with live
// changes by construction. For each chunk, in one READ COMMITTED transaction:
//
//  1. read the next keys after the checkpoint, in key order;
//  2. bump those keys' versions in distcache_outbox_versions, which takes
//     the same row locks live writers (the distcache_capture trigger,
//     events.OutboxWriter) take, waiting for any writer of those keys that
//     has not committed yet;
//  3. read the rows again, in a new statement (so a new snapshot that sees
//     every writer that got its version before ours), and insert one outbox
//     row per key: an upsert with to_jsonb(row) limited to the model's published
//     columns (distcache_published_image), or a delete when the row is
//     gone by now;
//  4. save the checkpoint (last key, counts) in distcache_publisher_state.
//
// A writer of a backloaded key either committed before step 2 (its change is
// in the image read at step 3, and its version is lower) or gets its version
// after ours (its event is newer and carries its own image). Either way the
// highest version of every key holds the row's latest state, so the topic's
// latest record per key equals the row, or is a tombstone for a deleted row.
// The checkpoint commits with the chunk, so a crashed backload resumes after
// its last complete chunk, and a per-model advisory lock keeps two backloads
// of one model from running at once.
package backload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/services/core-publisher/internal/pubmetrics"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Sentinel errors.
var (
	// ErrUnknownModel: no capture trigger and no configured model has this
	// aggregate name.
	ErrUnknownModel = errors.New("unknown model")
	// ErrRunning: a backload of the model is already running (here or in
	// another instance).
	ErrRunning = errors.New("backload already running")
)

// Model is a table that can be backloaded: rows of Table keyed by
// KeyColumn, published as Aggregate.
type Model struct {
	Aggregate string
	Table     string // as given or as regclass text, possibly schema-qualified
	KeyColumn string
	// Columns limits the published columns, as the capture trigger's third argument does:
	// "only:a|b" or "except:a|b" (distcache_published_image); empty publishes every column.
	Columns string
}

// ValidateColumns checks a published-columns spec ("only:a|b", "except:a|b" or empty): see
// events.ColumnSpec.
func ValidateColumns(spec string) error {
	_, err := events.ParseColumnSpec(spec)
	return err
}

// Status values of a State.
const (
	StatusRunning = "running"
	StatusDone    = "done"
)

// State is a model's backload checkpoint, stored as JSON in
// distcache_publisher_state under the name "backload:<aggregate>".
type State struct {
	Model      string     `json:"model"`
	Table      string     `json:"table"`
	KeyColumn  string     `json:"key_column"`
	Status     string     `json:"status"`
	LastKey    *string    `json:"last_key,omitempty"` // the last key done; nil before the first chunk
	Rows       int64      `json:"rows"`               // rows written so far in this run
	Total      int64      `json:"total"`              // rows in the table when the run started (estimate)
	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// StateName is the distcache_publisher_state name of a model's checkpoint.
func StateName(aggregate string) string { return "backload:" + aggregate }

// Backloader runs backloads. It is safe for concurrent use.
type Backloader struct {
	pool *pgxpool.Pool
	o    options
	wg   sync.WaitGroup
}

type options struct {
	models    []Model
	chunkSize int
	log       *slog.Logger
	metrics   *pubmetrics.Metrics
}

// Option configures a Backloader.
type Option func(*options)

// WithModels adds models besides the tables distcache_capture is attached to
// (for outboxes written with events.OutboxWriter). Default: none.
func WithModels(ms ...Model) Option { return func(o *options) { o.models = append(o.models, ms...) } }

// WithChunkSize sets the rows per chunk (and per transaction). Default 1000.
func WithChunkSize(n int) Option { return func(o *options) { o.chunkSize = n } }

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithMetrics sets the metrics. Default: a private set.
func WithMetrics(m *pubmetrics.Metrics) Option { return func(o *options) { o.metrics = m } }

// rescanInterval is how often RunPendingLoop looks for models never backloaded (a table that got
// the capture trigger since the last look).
const rescanInterval = 30 * time.Second

// New returns a Backloader using pool.
func New(pool *pgxpool.Pool, opts ...Option) (*Backloader, error) {
	o := options{chunkSize: 1000}
	for _, f := range opts {
		f(&o)
	}
	if pool == nil {
		return nil, errors.New("backload: nil pool")
	}
	if o.chunkSize < 1 {
		return nil, fmt.Errorf("backload: chunk size %d, want >= 1", o.chunkSize)
	}
	for _, m := range o.models {
		if err := events.ValidateAggregateName(m.Aggregate); err != nil {
			return nil, fmt.Errorf("backload: model %q: %w", m.Aggregate, err)
		}
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.metrics == nil {
		o.metrics = pubmetrics.New()
	}
	return &Backloader{pool: pool, o: o}, nil
}

// triggersSQL lists the tables distcache_capture is attached to, with the
// trigger arguments (aggregate, key column[, column spec]) NUL-separated.
const triggersSQL = `SELECT t.tgrelid::regclass::text, t.tgargs
FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
WHERE p.proname = 'distcache_capture' AND NOT t.tgisinternal AND t.tgnargs IN (2, 3)`

// Models returns every backloadable model, sorted by aggregate: the tables
// the distcache_capture trigger is attached to (read from pg_trigger) and the
// configured ones; a configured model wins over a trigger of the same
// aggregate.
func (b *Backloader) Models(ctx context.Context) ([]Model, error) {
	rows, err := b.pool.Query(ctx, triggersSQL)
	if err != nil {
		return nil, fmt.Errorf("list capture triggers: %w", err)
	}
	byAgg := map[string]Model{}
	for rows.Next() {
		var table string
		var args []byte
		if err := rows.Scan(&table, &args); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list capture triggers: %w", err)
		}
		parts := strings.Split(strings.TrimSuffix(string(args), "\x00"), "\x00")
		if len(parts) < 2 || len(parts) > 3 || events.ValidateAggregateName(parts[0]) != nil {
			continue
		}
		m := Model{Aggregate: parts[0], Table: table, KeyColumn: parts[1]}
		if len(parts) == 3 {
			m.Columns = parts[2]
		}
		byAgg[parts[0]] = m
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list capture triggers: %w", err)
	}
	for _, m := range b.o.models {
		byAgg[m.Aggregate] = m
	}
	out := make([]Model, 0, len(byAgg))
	for _, m := range byAgg {
		out = append(out, m)
	}
	slices.SortFunc(out, func(x, y Model) int { return strings.Compare(x.Aggregate, y.Aggregate) })
	return out, nil
}

// Model returns the model of an aggregate, or ErrUnknownModel.
func (b *Backloader) Model(ctx context.Context, aggregate string) (Model, error) {
	ms, err := b.Models(ctx)
	if err != nil {
		return Model{}, err
	}
	for _, m := range ms {
		if m.Aggregate == aggregate {
			return m, nil
		}
	}
	return Model{}, fmt.Errorf("%w: %q (no table with the distcache_capture trigger or configured model has this aggregate)", ErrUnknownModel, aggregate)
}

// State returns the checkpoint of a model's backload; ok is false when the
// model was never backloaded.
func (b *Backloader) State(ctx context.Context, aggregate string) (st State, ok bool, err error) {
	var raw []byte
	err = b.pool.QueryRow(ctx, `SELECT value FROM distcache_publisher_state WHERE name = $1`, StateName(aggregate)).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("read backload state: %w", err)
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return State{}, false, fmt.Errorf("decode backload state: %w", err)
	}
	return st, true, nil
}

// Mode says where a backload starts.
type Mode int

const (
	// Fresh starts from the first key, whatever the checkpoint says.
	Fresh Mode = iota
	// Resume continues a run left unfinished (crash, shutdown) from its
	// checkpoint, and does nothing if the last run finished.
	Resume
)

// Run backloads a model synchronously and returns its final state.
func (b *Backloader) Run(ctx context.Context, aggregate string, mode Mode) (State, error) {
	j, err := b.begin(ctx, aggregate)
	if err != nil {
		return State{}, err
	}
	defer j.release()
	return j.run(ctx, mode)
}

// Start begins a fresh backload of a model in the background (bounded by
// ctx) once it holds the model's lock; it returns ErrRunning when a
// backload of the model runs already, ErrUnknownModel for an unknown one.
func (b *Backloader) Start(ctx context.Context, aggregate string) error {
	j, err := b.begin(ctx, aggregate)
	if err != nil {
		return err
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer j.release()
		if _, err := j.run(ctx, Fresh); err != nil && ctx.Err() == nil {
			b.o.log.Error("backload failed", "model", aggregate, "err", err)
		}
	}()
	return nil
}

// Wait waits for backloads started with Start to end.
func (b *Backloader) Wait() { b.wg.Wait() }

// RunPending backloads (Resume) every model that has no checkpoint yet or
// whose last run did not finish. It returns the first error after trying
// them all.
func (b *Backloader) RunPending(ctx context.Context) error {
	ms, err := b.Models(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		st, ok, err := b.State(ctx, m.Aggregate)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok && st.Status == StatusDone {
			continue
		}
		if _, err := b.Run(ctx, m.Aggregate, Resume); err != nil && !errors.Is(err, ErrRunning) {
			errs = append(errs, fmt.Errorf("model %s: %w", m.Aggregate, err))
		}
	}
	return errors.Join(errs...)
}

// RunPendingLoop calls RunPending now and every rescanInterval until ctx
// ends; the relay calls it while it holds the lease, so a model is
// backloaded the first time it is published.
func (b *Backloader) RunPendingLoop(ctx context.Context) {
	for {
		if err := b.RunPending(ctx); err != nil && ctx.Err() == nil {
			b.o.log.Error("initial backload", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(rescanInterval):
		}
	}
}

// job is one backload holding its model's lock on a dedicated connection.
type job struct {
	b       *Backloader
	m       Model
	conn    *pgxpool.Conn
	table   string // quoted regclass text
	col     string // quoted column
	colType string // format_type of the key column
}

func (b *Backloader) begin(ctx context.Context, aggregate string) (*job, error) {
	m, err := b.Model(ctx, aggregate)
	if err != nil {
		return nil, err
	}
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("backload %s: %w", aggregate, err)
	}
	j := &job{b: b, m: m, conn: conn, col: pgx.Identifier{m.KeyColumn}.Sanitize()}
	var table, colType *string
	err = conn.QueryRow(ctx, `SELECT to_regclass($1)::text,
		(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
		 WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped)`,
		m.Table, m.KeyColumn).Scan(&table, &colType)
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("backload %s: resolve table: %w", aggregate, err)
	}
	if table == nil {
		conn.Release()
		return nil, fmt.Errorf("%w: %s: table %q does not exist", ErrUnknownModel, aggregate, m.Table)
	}
	if colType == nil {
		conn.Release()
		return nil, fmt.Errorf("%w: %s: table %s has no column %q", ErrUnknownModel, aggregate, *table, m.KeyColumn)
	}
	j.table, j.colType = *table, *colType
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, "distcache_backload:"+aggregate).Scan(&got); err != nil {
		conn.Release()
		return nil, fmt.Errorf("backload %s: lock: %w", aggregate, err)
	}
	if !got {
		conn.Release()
		return nil, fmt.Errorf("%w: %s", ErrRunning, aggregate)
	}
	b.o.metrics.BackloadRunning.WithLabelValues(aggregate).Set(1)
	return j, nil
}

func (j *job) release() {
	j.b.o.metrics.BackloadRunning.WithLabelValues(j.m.Aggregate).Set(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := j.conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, "distcache_backload:"+j.m.Aggregate); err != nil {
		// The lock is session-level: never hand the connection back holding it.
		j.conn.Hijack().Close(ctx)
		return
	}
	j.conn.Release()
}

func (j *job) run(ctx context.Context, mode Mode) (State, error) {
	log := j.b.o.log.With("model", j.m.Aggregate)
	st, ok, err := j.b.State(ctx, j.m.Aggregate)
	if err != nil {
		return st, err
	}
	now := time.Now().UTC()
	switch {
	case mode == Resume && ok && st.Status == StatusDone:
		return st, nil
	case mode == Resume && ok && st.Status == StatusRunning:
		log.Info("backload resuming", "last_key", st.LastKey, "rows", st.Rows)
	default:
		st = State{Model: j.m.Aggregate, Table: j.table, KeyColumn: j.m.KeyColumn, Status: StatusRunning, StartedAt: now}
		if err := j.conn.QueryRow(ctx, `SELECT count(*) FROM `+j.table).Scan(&st.Total); err != nil {
			return st, fmt.Errorf("backload %s: count rows: %w", j.m.Aggregate, err)
		}
		log.Info("backload starting", "table", j.table, "rows", st.Total)
	}
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		n, err := j.chunkRetry(ctx, &st)
		if err != nil {
			return st, err
		}
		j.b.o.metrics.BackloadRows.WithLabelValues(j.m.Aggregate).Add(float64(n))
		if st.Total > 0 {
			j.b.o.metrics.BackloadProgress.WithLabelValues(j.m.Aggregate).Set(min(1, float64(st.Rows)/float64(st.Total)))
		}
		if st.Status == StatusDone {
			j.b.o.metrics.BackloadProgress.WithLabelValues(j.m.Aggregate).Set(1)
			log.Info("backload done", "rows", st.Rows)
			return st, nil
		}
	}
}

// chunkRetry runs one chunk, retrying deadlocks with live writers that lock
// several keys in another order.
func (j *job) chunkRetry(ctx context.Context, st *State) (int, error) {
	for attempt := 0; ; attempt++ {
		next := *st
		n, err := j.chunk(ctx, &next)
		var pgErr *pgconn.PgError
		if err != nil && errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001") && attempt < 10 {
			j.b.o.log.Warn("backload chunk retried", "model", j.m.Aggregate, "err", err)
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("backload %s: %w", j.m.Aggregate, err)
		}
		*st = next
		return n, nil
	}
}

func (j *job) chunk(ctx context.Context, st *State) (int, error) {
	tx, err := j.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	// 1. the next keys, as the capture trigger renders them.
	keysSQL := `SELECT to_jsonb(t.` + j.col + `) #>> '{}' FROM ` + j.table + ` t`
	args := []any{j.b.o.chunkSize}
	if st.LastKey != nil {
		keysSQL += ` WHERE t.` + j.col + ` > $2::` + j.colType
		args = append(args, *st.LastKey)
	}
	keysSQL += ` ORDER BY t.` + j.col + ` LIMIT $1`
	rows, err := tx.Query(ctx, keysSQL, args...)
	if err != nil {
		return 0, fmt.Errorf("read keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("read keys: %w", err)
	}
	now := time.Now().UTC()
	if len(keys) == 0 {
		st.Status, st.UpdatedAt, st.FinishedAt = StatusDone, now, &now
		if err := saveState(ctx, tx, st); err != nil {
			return 0, err
		}
		return 0, tx.Commit(ctx)
	}

	// 2. take the keys' version locks (sorted, like every multi-key writer
	// should) and allocate the backload's versions.
	rows, err = tx.Query(ctx, `INSERT INTO distcache_outbox_versions AS cur (aggregate, agg_key, version)
		SELECT $1, k, 1 FROM unnest($2::text[]) AS k ORDER BY k
		ON CONFLICT (aggregate, agg_key) DO UPDATE SET version = cur.version + 1
		RETURNING agg_key, version`, j.m.Aggregate, keys)
	if err != nil {
		return 0, fmt.Errorf("allocate versions: %w", err)
	}
	var vkeys []string
	var vers []int64
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return 0, fmt.Errorf("allocate versions: %w", err)
		}
		vkeys, vers = append(vkeys, k), append(vers, v)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("allocate versions: %w", err)
	}

	// 3. a new statement, a new snapshot: the rows as of now.
	_, err = tx.Exec(ctx, `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload)
		SELECT $1, v.k, v.ver, CASE WHEN t.img IS NULL THEN 'delete' ELSE 'upsert' END, t.img
		FROM unnest($2::text[], $3::bigint[]) AS v(k, ver)
		LEFT JOIN (SELECT distcache_published_image(to_jsonb(x), $4) AS img, to_jsonb(x.`+j.col+`) #>> '{}' AS k FROM `+j.table+` x
		           WHERE x.`+j.col+` = ANY($2::text[]::`+j.colType+`[])) t ON t.k = v.k
		ORDER BY v.k`, j.m.Aggregate, vkeys, vers, j.m.Columns)
	if err != nil {
		return 0, fmt.Errorf("write outbox: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, events.OutboxChannel, j.m.Aggregate); err != nil {
		return 0, fmt.Errorf("notify: %w", err)
	}

	// 4. checkpoint with the chunk.
	last := keys[len(keys)-1]
	st.LastKey = &last
	st.Rows += int64(len(keys))
	st.UpdatedAt = now
	if err := saveState(ctx, tx, st); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit chunk: %w", err)
	}
	return len(keys), nil
}

func saveState(ctx context.Context, tx pgx.Tx, st *State) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO distcache_publisher_state (name, value, updated_at) VALUES ($1, $2, now())
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()`, StateName(st.Model), raw)
	if err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

// Package registry is the projection registry in PostgreSQL: the tables distcache_projections and
// distcache_generations that migrations/ creates (docs/architecture.md, "Projection registry").
// The control-plane's API and its workflow activities are its writers; cache-producers read it,
// follow its NOTIFY channel, report the generations they rebuild in place (rebuild.go) and report
// each generation they keep up to date: owner, position, newest change, dead letters (consumer.go).
//
// Every state change that must agree with Redis (a cutover) runs in one transaction that holds the
// projection's row lock, so concurrent cutovers, rollbacks and retirements of one projection
// serialise.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/projection"
)

// Sentinel errors.
var (
	// ErrNotFound: no such projection (or it is deleted), or no such generation.
	ErrNotFound = errors.New("registry: not found")
	// ErrExists: a projection of that name exists (and is not deleted).
	ErrExists = errors.New("registry: projection exists")
	// ErrPrecondition: the registry's state forbids the change (a rollback with no retained
	// previous generation, a cutover to a generation that is not being kept up to date).
	ErrPrecondition = errors.New("registry: failed precondition")
)

// Generation states (the CHECK constraint of distcache_generations.state).
const (
	StateAllocated   = "allocated"
	StateBackfilling = "backfilling"
	StateTailing     = "tailing"
	StateLive        = "live"
	StateRetiring    = "retiring"
	StateRetired     = "retired"
	StateFailed      = "failed"
)

// ValidState reports whether s is a generation state.
func ValidState(s string) bool {
	switch s {
	case StateAllocated, StateBackfilling, StateTailing, StateLive, StateRetiring, StateRetired, StateFailed:
		return true
	}
	return false
}

// Projection is one row of distcache_projections.
type Projection struct {
	projection.Definition
	// Current is the generation readers use (0: none yet); Previous the one before it, kept for a
	// rollback while its state is retiring (0: none).
	Current   int64
	Previous  int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Generation is one row of distcache_generations.
type Generation struct {
	Projection  string
	Generation  int64
	Definition  projection.Definition
	State       string
	WorkflowID  string
	RunID       string // the run of WorkflowID that built it ("" if allocated before runs were recorded)
	RecordsDone int64
	Offset      int64
	EndOffset   int64
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Store reads and writes the registry.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store over pool. The schema must be migrated (the control set of migrations).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Ping checks the database.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

func filterJSON(f *projection.Filter) ([]byte, error) {
	if f == nil {
		return nil, nil
	}
	return json.Marshal(f)
}

// CreateProjection inserts a projection, or revives a deleted one of the same name with the new
// definition (its generation numbers continue, so old keys can never be mistaken for new ones).
// ErrExists when a projection of that name is not deleted.
func (s *Store) CreateProjection(ctx context.Context, d projection.Definition) error {
	filter, err := filterJSON(d.Filter)
	if err != nil {
		return fmt.Errorf("create projection: %w", err)
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO distcache_projections AS p (name, model, key_template, lowercase_key, fields, filter)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET
			model = EXCLUDED.model, key_template = EXCLUDED.key_template,
			lowercase_key = EXCLUDED.lowercase_key, fields = EXCLUDED.fields, filter = EXCLUDED.filter,
			current_generation = NULL, previous_generation = NULL,
			created_at = now(), deleted_at = NULL
		WHERE p.deleted_at IS NOT NULL`,
		d.Name, d.Model, d.KeyTemplate, d.LowercaseKey, d.Fields, filter)
	if err != nil {
		return fmt.Errorf("create projection %q: %w", d.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("create projection %q: %w", d.Name, ErrExists)
	}
	return nil
}

// AbandonProjection undoes a CreateProjection whose workflow could not be started: it deletes
// the projection when it has no generation at all (a fresh name) or soft-deletes it again.
func (s *Store) AbandonProjection(ctx context.Context, name string) error {
	_, err := s.pool.Exec(ctx, `
		WITH gens AS (SELECT count(*) AS n FROM distcache_generations WHERE projection = $1)
		UPDATE distcache_projections SET deleted_at = now()
		WHERE name = $1 AND current_generation IS NULL AND (SELECT n FROM gens) > 0`, name)
	if err != nil {
		return fmt.Errorf("abandon projection %q: %w", name, err)
	}
	_, err = s.pool.Exec(ctx, `
		DELETE FROM distcache_projections p WHERE name = $1 AND current_generation IS NULL
		AND NOT EXISTS (SELECT 1 FROM distcache_generations g WHERE g.projection = p.name)`, name)
	if err != nil {
		return fmt.Errorf("abandon projection %q: %w", name, err)
	}
	return nil
}

const projectionColumns = `name, model, key_template, lowercase_key, fields, filter,
	coalesce(current_generation, 0), coalesce(previous_generation, 0), created_at, updated_at`

func scanProjection(row pgx.Row) (Projection, error) {
	var p Projection
	var filter []byte
	err := row.Scan(&p.Name, &p.Model, &p.KeyTemplate, &p.LowercaseKey, &p.Fields, &filter,
		&p.Current, &p.Previous, &p.CreatedAt, &p.UpdatedAt)
	if err != nil {
		return Projection{}, err
	}
	if len(filter) > 0 {
		p.Filter = &projection.Filter{}
		if err := json.Unmarshal(filter, p.Filter); err != nil {
			return Projection{}, fmt.Errorf("decode filter of %q: %w", p.Name, err)
		}
	}
	return p, nil
}

// GetProjection returns a projection that is not deleted.
func (s *Store) GetProjection(ctx context.Context, name string) (Projection, error) {
	p, err := scanProjection(s.pool.QueryRow(ctx,
		`SELECT `+projectionColumns+` FROM distcache_projections WHERE name = $1 AND deleted_at IS NULL`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Projection{}, fmt.Errorf("get projection %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Projection{}, fmt.Errorf("get projection %q: %w", name, err)
	}
	return p, nil
}

// ListProjections returns up to limit projections whose names sort after after, by name.
func (s *Store) ListProjections(ctx context.Context, after string, limit int) ([]Projection, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+projectionColumns+` FROM distcache_projections
		WHERE deleted_at IS NULL AND name > $1 ORDER BY name LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list projections: %w", err)
	}
	defer rows.Close()
	var out []Projection
	for rows.Next() {
		p, err := scanProjection(rows)
		if err != nil {
			return nil, fmt.Errorf("list projections: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list projections: %w", err)
	}
	return out, nil
}

const generationColumns = `projection, generation, definition, state, coalesce(workflow_id, ''),
	coalesce(run_id, ''), records_done, backfill_offset, end_offset, created_at, updated_at`

func scanGeneration(row pgx.Row) (Generation, error) {
	var g Generation
	var def []byte
	err := row.Scan(&g.Projection, &g.Generation, &def, &g.State, &g.WorkflowID, &g.RunID,
		&g.RecordsDone, &g.Offset, &g.EndOffset, &g.CreatedAt, &g.UpdatedAt)
	if err != nil {
		return Generation{}, err
	}
	if err := json.Unmarshal(def, &g.Definition); err != nil {
		return Generation{}, fmt.Errorf("decode definition of %s/g%d: %w", g.Projection, g.Generation, err)
	}
	return g, nil
}

// Generations returns every generation of a projection, newest first.
func (s *Store) Generations(ctx context.Context, name string) ([]Generation, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+generationColumns+` FROM distcache_generations
		WHERE projection = $1 ORDER BY generation DESC`, name)
	if err != nil {
		return nil, fmt.Errorf("generations of %q: %w", name, err)
	}
	defer rows.Close()
	var out []Generation
	for rows.Next() {
		g, err := scanGeneration(rows)
		if err != nil {
			return nil, fmt.Errorf("generations of %q: %w", name, err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("generations of %q: %w", name, err)
	}
	return out, nil
}

// GenerationsInStates returns the generations in one of states, of every projection including
// deleted ones, ordered by projection and generation. Cache-producers list with it what they
// consume (tailing, live, retiring) and whose bookkeeping they remove (retired, failed): a deleted
// projection's generations are among the latter. An unknown state is ErrPrecondition.
func (s *Store) GenerationsInStates(ctx context.Context, states ...string) ([]Generation, error) {
	for _, st := range states {
		if !ValidState(st) {
			return nil, fmt.Errorf("generations in states %v: %w: unknown state %q", states, ErrPrecondition, st)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+generationColumns+` FROM distcache_generations
		WHERE state = ANY($1) ORDER BY projection, generation`, states)
	if err != nil {
		return nil, fmt.Errorf("generations in states %v: %w", states, err)
	}
	defer rows.Close()
	var out []Generation
	for rows.Next() {
		g, err := scanGeneration(rows)
		if err != nil {
			return nil, fmt.Errorf("generations in states %v: %w", states, err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("generations in states %v: %w", states, err)
	}
	return out, nil
}

// GetGeneration returns one generation.
func (s *Store) GetGeneration(ctx context.Context, name string, gen int64) (Generation, error) {
	g, err := scanGeneration(s.pool.QueryRow(ctx, `SELECT `+generationColumns+` FROM distcache_generations
		WHERE projection = $1 AND generation = $2`, name, gen))
	if errors.Is(err, pgx.ErrNoRows) {
		return Generation{}, fmt.Errorf("generation %s/g%d: %w", name, gen, ErrNotFound)
	}
	if err != nil {
		return Generation{}, fmt.Errorf("generation %s/g%d: %w", name, gen, err)
	}
	return g, nil
}

// inTx runs f in a transaction, committing when f returns nil.
func (s *Store) inTx(ctx context.Context, f func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// lockProjection locks the projection's row for the transaction.
func lockProjection(ctx context.Context, tx pgx.Tx, name string) (Projection, error) {
	p, err := scanProjection(tx.QueryRow(ctx, `SELECT `+projectionColumns+` FROM distcache_projections
		WHERE name = $1 AND deleted_at IS NULL FOR UPDATE`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Projection{}, ErrNotFound
	}
	return p, err
}

// AllocateGeneration is AllocateGenerationForRun without a run id.
func (s *Store) AllocateGeneration(ctx context.Context, d projection.Definition, workflowID string) (gen, current int64, err error) {
	return s.AllocateGenerationForRun(ctx, d, workflowID, "")
}

// AllocateGenerationForRun makes the definition the projection's definition of record and
// allocates a generation for it (one more than any generation the projection ever had), in state
// allocated, recording the workflow and run that build it (links then open that run, not the
// newest of the workflow id). It is idempotent for one workflow: when the newest generation is
// still allocated and belongs to workflowID, that one is returned (an activity retry after a lost
// reply) and runID recorded. current is the generation readers use now (0: none).
func (s *Store) AllocateGenerationForRun(ctx context.Context, d projection.Definition, workflowID, runID string) (gen, current int64, err error) {
	def, err := json.Marshal(d)
	if err != nil {
		return 0, 0, fmt.Errorf("allocate generation: %w", err)
	}
	filter, err := filterJSON(d.Filter)
	if err != nil {
		return 0, 0, fmt.Errorf("allocate generation: %w", err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		p, err := lockProjection(ctx, tx, d.Name)
		if err != nil {
			return err
		}
		current = p.Current
		var last int64
		var lastState, lastWF string
		err = tx.QueryRow(ctx, `SELECT generation, state, coalesce(workflow_id, '') FROM distcache_generations
			WHERE projection = $1 ORDER BY generation DESC LIMIT 1`, d.Name).Scan(&last, &lastState, &lastWF)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if lastState == StateAllocated && lastWF == workflowID && workflowID != "" {
			gen = last
			_, err = tx.Exec(ctx, `UPDATE distcache_generations SET definition = $3, run_id = nullif($4, '')
				WHERE projection = $1 AND generation = $2`, d.Name, gen, def, runID)
			return err
		}
		gen = last + 1
		if _, err := tx.Exec(ctx, `INSERT INTO distcache_generations (projection, generation, definition, state, workflow_id, run_id)
			VALUES ($1, $2, $3, $4, $5, nullif($6, ''))`, d.Name, gen, def, StateAllocated, workflowID, runID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE distcache_projections SET model = $2, key_template = $3, lowercase_key = $4,
			fields = $5, filter = $6 WHERE name = $1`, d.Name, d.Model, d.KeyTemplate, d.LowercaseKey, d.Fields, filter)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("allocate generation of %q: %w", d.Name, err)
	}
	return gen, current, nil
}

// SetState moves a generation to state (and records offset as its backfill offset when not nil).
// A retired generation stays retired, and the current generation cannot become failed:
// ErrPrecondition.
func (s *Store) SetState(ctx context.Context, name string, gen int64, state string, offset *int64) error {
	if !ValidState(state) {
		return fmt.Errorf("set state of %s/g%d: %w: unknown state %q", name, gen, ErrPrecondition, state)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE distcache_generations
		SET state = $3, backfill_offset = coalesce($4, backfill_offset)
		WHERE projection = $1 AND generation = $2 AND (state <> 'retired' OR $3 = 'retired')
		AND NOT ($3 = 'failed' AND generation = (SELECT coalesce(current_generation, 0)
			FROM distcache_projections WHERE name = $1))`, name, gen, state, offset)
	if err != nil {
		return fmt.Errorf("set state of %s/g%d: %w", name, gen, err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.GetGeneration(ctx, name, gen); err != nil {
			return fmt.Errorf("set state: %w", err)
		}
		return fmt.Errorf("set state of %s/g%d to %s: %w: generation is retired, or live and cannot fail", name, gen, state, ErrPrecondition)
	}
	return nil
}

// RecordProgress stores a backfill's progress.
func (s *Store) RecordProgress(ctx context.Context, name string, gen, recordsDone, offset, endOffset int64) error {
	tag, err := s.pool.Exec(ctx, `UPDATE distcache_generations
		SET records_done = $3, backfill_offset = $4, end_offset = $5
		WHERE projection = $1 AND generation = $2`, name, gen, recordsDone, offset, endOffset)
	if err != nil {
		return fmt.Errorf("record progress of %s/g%d: %w", name, gen, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("record progress of %s/g%d: %w", name, gen, ErrNotFound)
	}
	return nil
}

// SwapFunc moves the Redis pointer of a projection to a generation (distcache.Publisher.Cutover).
type SwapFunc func(ctx context.Context, projection string, generation int64) error

// ClearFunc removes the Redis pointer of a deleted projection (distcache.Publisher.DeletePointer).
type ClearFunc func(ctx context.Context, projection string) error

// CutoverStates are the states of a generation that is kept up to date, and so may be cut over
// to (a rollback's target, the previous generation, is retiring).
var CutoverStates = []string{StateTailing, StateLive, StateRetiring}

// Cutover makes gen the projection's current generation: under the projection's row lock it
// checks the target, calls swap (the Redis pointer swap and control event), and records the
// result: the target live, the generation that was current retiring and remembered as previous.
// With rollback set, gen is ignored and the target is the previous generation, which must still be
// retiring (retained). Cutting over to the current generation again changes nothing. When swap
// fails nothing is recorded.
func (s *Store) Cutover(ctx context.Context, name string, gen int64, rollback bool, swap SwapFunc) (current, previous int64, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		p, err := lockProjection(ctx, tx, name)
		if err != nil {
			return err
		}
		target := gen
		if rollback {
			if p.Previous == 0 {
				return fmt.Errorf("%w: nothing to roll back to: no previous generation is retained", ErrPrecondition)
			}
			target = p.Previous
		}
		if target == p.Current && target != 0 {
			current, previous = p.Current, p.Previous
			_, err := tx.Exec(ctx, `UPDATE distcache_generations SET state = 'live'
				WHERE projection = $1 AND generation = $2 AND state <> 'live'`, name, target)
			return err
		}
		var state string
		err = tx.QueryRow(ctx, `SELECT state FROM distcache_generations WHERE projection = $1 AND generation = $2`,
			name, target).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: generation %d does not exist", ErrNotFound, target)
		}
		if err != nil {
			return err
		}
		if !slices.Contains(CutoverStates, state) {
			return fmt.Errorf("%w: generation %d is %s (a cutover needs one of %v)", ErrPrecondition, target, state, CutoverStates)
		}
		if err := swap(ctx, name, target); err != nil {
			return fmt.Errorf("swap pointer: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE distcache_generations SET state = 'live'
			WHERE projection = $1 AND generation = $2`, name, target); err != nil {
			return err
		}
		if p.Current != 0 {
			if _, err := tx.Exec(ctx, `UPDATE distcache_generations SET state = 'retiring'
				WHERE projection = $1 AND generation = $2`, name, p.Current); err != nil {
				return err
			}
		}
		current, previous = target, p.Current
		_, err = tx.Exec(ctx, `UPDATE distcache_projections SET current_generation = $2, previous_generation = nullif($3, 0)
			WHERE name = $1`, name, current, previous)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("cutover %q: %w", name, err)
	}
	return current, previous, nil
}

// ReadFunc reads the Redis pointer of a projection (distcache.Publisher.CurrentGeneration): 0
// when there is none.
type ReadFunc func(ctx context.Context, projection string) (int64, error)

// ReconcilePointer makes the Redis pointer of a projection agree with the registry: under the
// projection's row lock (so no cutover, rollback or delete runs meanwhile) it reads the pointer
// and, when the projection has a current generation and the pointer is missing or names another
// one (Redis lost its data, or someone wrote the key), calls swap to restore it. It reports the
// pointer it found and whether it restored it. A deleted projection is ErrNotFound.
func (s *Store) ReconcilePointer(ctx context.Context, name string, read ReadFunc, swap SwapFunc) (found int64, restored bool, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		p, err := lockProjection(ctx, tx, name)
		if err != nil {
			return err
		}
		if p.Current == 0 {
			return nil
		}
		if found, err = read(ctx, name); err == nil && found == p.Current {
			return nil
		}
		// A pointer that cannot be read as a generation is as wrong as a missing one.
		if err := swap(ctx, name, p.Current); err != nil {
			return fmt.Errorf("restore pointer to generation %d: %w", p.Current, err)
		}
		restored = true
		return nil
	})
	if err != nil {
		return found, false, fmt.Errorf("reconcile pointer of %q: %w", name, err)
	}
	return found, restored, nil
}

// MarkRetired moves a retiring generation that readers no longer use to retired (cache-producers
// then stop consuming it) and forgets it as the previous generation. It reports false, changing
// nothing, when the generation is current again (a rollback), or not retiring.
func (s *Store) MarkRetired(ctx context.Context, name string, gen int64) (bool, error) {
	retired := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		p, err := lockProjection(ctx, tx, name)
		if errors.Is(err, ErrNotFound) {
			return nil // deleted: DeleteProjection retired everything
		}
		if err != nil {
			return err
		}
		if p.Current == gen {
			return nil
		}
		tag, err := tx.Exec(ctx, `UPDATE distcache_generations SET state = 'retired'
			WHERE projection = $1 AND generation = $2 AND state = 'retiring'`, name, gen)
		if err != nil {
			return err
		}
		retired = tag.RowsAffected() == 1
		if retired && p.Previous == gen {
			_, err = tx.Exec(ctx, `UPDATE distcache_projections SET previous_generation = NULL WHERE name = $1`, name)
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("mark %s/g%d retired: %w", name, gen, err)
	}
	return retired, nil
}

// DeleteProjection soft-deletes a projection: it is no longer listed, its pointer fields are
// cleared and every generation that is not yet retired or failed becomes retired. It returns the
// generations whose keys may still be in Redis, for the caller to unlink: those it retired, or,
// when the projection was already deleted (a retry whose first reply was lost), every generation.
// ErrNotFound when no projection of that name ever existed.
func (s *Store) DeleteProjection(ctx context.Context, name string, clear ClearFunc) (gens []int64, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var deleted bool
		err := tx.QueryRow(ctx, `SELECT deleted_at IS NOT NULL FROM distcache_projections WHERE name = $1 FOR UPDATE`,
			name).Scan(&deleted)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		// The pointer is cleared while the projection's row is locked, as Cutover swaps it, so a
		// concurrent cutover or rollback cannot bring it back. A retried delete clears it again:
		// the delete event then reaches clients that missed the first.
		if err := clear(ctx, name); err != nil {
			return fmt.Errorf("clear pointer: %w", err)
		}
		q := `UPDATE distcache_generations SET state = 'retired'
			WHERE projection = $1 AND state NOT IN ('retired', 'failed') RETURNING generation`
		if deleted {
			q = `SELECT generation FROM distcache_generations WHERE projection = $1`
		}
		rows, err := tx.Query(ctx, q, name)
		if err != nil {
			return err
		}
		gens, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		slices.Sort(gens)
		if deleted {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE distcache_projections SET deleted_at = now(),
			current_generation = NULL, previous_generation = NULL WHERE name = $1`, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("delete projection %q: %w", name, err)
	}
	return gens, nil
}

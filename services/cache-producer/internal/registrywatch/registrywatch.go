// Package registrywatch follows the projection registry (PostgreSQL, owned by
// the control-plane): it lists the generations a cache-producer must keep up
// to date (states tailing, live, retiring) with the definition snapshot each
// one builds, and the generations that ended (retired, failed), and hands
// them to a callback at start, on every NOTIFY on channel distcache_registry
// (migrations/000003) and every Interval as a safety net for a notification
// lost while the connection was down. A changed definition therefore reaches
// the consumers without a restart.
package registrywatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/workflows"
)

// Channel is the registry's NOTIFY channel.
const Channel = "distcache_registry"

// Generation is one row of distcache_generations as the producer needs it.
type Generation struct {
	Projection string
	Generation int64
	Definition projection.Definition
	State      string
	// Offset is the registry's backfill offset: where a tailing consumer
	// starts when Redis has no offset for the generation.
	Offset int64
}

// Snapshot is the registry at one moment.
type Snapshot struct {
	// Active are the generations in tailing, live or retiring.
	Active []Generation
	// Ended are the generations in retired or failed.
	Ended []Generation
}

// Load reads the snapshot. It reads distcache_generations directly (the table
// contract of docs/architecture.md): workflows/registry offers per-projection
// listings only, which miss the generations of deleted projections.
func Load(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) (Snapshot, error) {
	rows, err := q.Query(ctx, `SELECT projection, generation, definition, state, backfill_offset
		FROM distcache_generations WHERE state = ANY($1) ORDER BY projection, generation`,
		[]string{workflows.StateTailing, workflows.StateLive, workflows.StateRetiring, workflows.StateRetired, workflows.StateFailed})
	if err != nil {
		return Snapshot{}, fmt.Errorf("list generations: %w", err)
	}
	defer rows.Close()
	var s Snapshot
	for rows.Next() {
		var g Generation
		var def []byte
		if err := rows.Scan(&g.Projection, &g.Generation, &def, &g.State, &g.Offset); err != nil {
			return Snapshot{}, fmt.Errorf("list generations: %w", err)
		}
		if err := json.Unmarshal(def, &g.Definition); err != nil {
			return Snapshot{}, fmt.Errorf("decode definition of %s/g%d: %w", g.Projection, g.Generation, err)
		}
		switch g.State {
		case workflows.StateRetired, workflows.StateFailed:
			s.Ended = append(s.Ended, g)
		default:
			s.Active = append(s.Active, g)
		}
	}
	if err := rows.Err(); err != nil {
		return Snapshot{}, fmt.Errorf("list generations: %w", err)
	}
	return s, nil
}

// Watcher calls Apply with a fresh Snapshot whenever the registry may have
// changed.
type Watcher struct {
	Pool *pgxpool.Pool
	// Apply receives each snapshot; calls do not overlap.
	Apply func(ctx context.Context, s Snapshot)
	// Interval between full reloads without a notification (default 30 s).
	Interval time.Duration
	// Debounce groups notifications arriving together (default 50 ms).
	Debounce time.Duration
	Logger   *slog.Logger
	// OnLoad, when set, is told about each load's outcome (readiness).
	OnLoad func(err error)
}

// Run watches until ctx ends. It returns ctx's error.
func (w *Watcher) Run(ctx context.Context) error {
	if w.Interval <= 0 {
		w.Interval = 30 * time.Second
	}
	if w.Debounce <= 0 {
		w.Debounce = 50 * time.Millisecond
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := w.listen(ctx, log)
		if ctx.Err() != nil {
			break
		}
		log.Warn("registry watch interrupted, reconnecting", "err", err, "backoff", backoff)
		if w.OnLoad != nil {
			w.OnLoad(err)
		}
		// Keep the consumers fed while LISTEN is down.
		w.reload(ctx, log)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	return ctx.Err()
}

func (w *Watcher) reload(ctx context.Context, log *slog.Logger) error {
	s, err := Load(ctx, w.Pool)
	if w.OnLoad != nil {
		w.OnLoad(err)
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("load registry", "err", err)
		}
		return err
	}
	w.Apply(ctx, s)
	return nil
}

// listen holds a LISTEN connection and reloads on each notification.
func (w *Watcher) listen(ctx context.Context, log *slog.Logger) error {
	conn, err := w.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer func() {
		// The connection returns to the pool: stop listening on it.
		uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "UNLISTEN *"); err != nil {
			conn.Conn().Close(uctx) //nolint:errcheck // the pool drops a closed connection
		}
	}()
	if err := w.reload(ctx, log); err != nil {
		return err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, w.Interval)
		n, err := conn.Conn().WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			// periodic reload
		case err != nil:
			return fmt.Errorf("wait for notification: %w", err)
		default:
			log.Debug("registry changed", "payload", n.Payload)
			// Gather the notifications of one transaction or burst.
			for {
				dctx, cancel := context.WithTimeout(ctx, w.Debounce)
				_, err := conn.Conn().WaitForNotification(dctx)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					if !errors.Is(err, context.DeadlineExceeded) {
						return fmt.Errorf("wait for notification: %w", err)
					}
					break
				}
			}
		}
		if err := w.reload(ctx, log); err != nil {
			return err
		}
	}
}

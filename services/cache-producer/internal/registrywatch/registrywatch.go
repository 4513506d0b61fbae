// Package registrywatch follows the projection registry (PostgreSQL, owned by
// the control-plane): it lists the generations a cache-producer must keep up
// to date (states tailing, live, retiring) with the definition snapshot each
// one builds, and the generations that ended (retired, failed), and hands
// them to a callback at start, on every NOTIFY on channel distcache_registry
// (migrations/000003) and every Interval as a safety net for a notification
// lost while the connection was down. A changed definition therefore reaches
// the consumers without a restart. The registry's SQL is workflows/registry's;
// this package only listens and reads through it.
package registrywatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/workflows/registry"
)

// Channel is the registry's NOTIFY channel.
const Channel = "distcache_registry"

// Snapshot is the registry at one moment. A generation's Offset is the
// registry's backfill offset: where a tailing consumer starts when Redis has
// no offset for the generation.
type Snapshot struct {
	// Active are the generations in tailing, live or retiring.
	Active []registry.Generation
	// Ended are the generations in retired or failed, deleted projections'
	// included.
	Ended []registry.Generation
}

// Load reads the snapshot.
func Load(ctx context.Context, reg *registry.Store) (Snapshot, error) {
	gens, err := reg.GenerationsInStates(ctx, registry.StateTailing, registry.StateLive, registry.StateRetiring,
		registry.StateRetired, registry.StateFailed)
	if err != nil {
		return Snapshot{}, fmt.Errorf("read registry: %w", err)
	}
	var s Snapshot
	for _, g := range gens {
		switch g.State {
		case registry.StateRetired, registry.StateFailed:
			s.Ended = append(s.Ended, g)
		default:
			s.Active = append(s.Active, g)
		}
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
	s, err := Load(ctx, registry.New(w.Pool))
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

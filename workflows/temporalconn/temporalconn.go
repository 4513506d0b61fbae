// Package temporalconn keeps a service's data path independent of Temporal. A Monitor probes
// the Temporal frontend in the background and reports whether it answers, so that readiness can
// say "degraded" and write calls can fail fast, and it starts the service's worker the first
// time Temporal answers. A service therefore starts, and serves everything that does not need
// Temporal, while Temporal is down; its worker attaches when Temporal comes back.
//
// The client given to a Monitor should be lazy (client.NewLazyClient), since client.Dial fails
// when Temporal does not answer at start.
package temporalconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
)

// ErrUnavailable is wrapped by Monitor.Err while Temporal does not answer.
var ErrUnavailable = errors.New("temporal is unavailable")

// ErrWorkerDetached is wrapped by Monitor.Err while Temporal answers but the worker has not
// started yet.
var ErrWorkerDetached = errors.New("temporal worker not attached yet")

// Defaults of Config.
const (
	DefaultInterval     = time.Second
	DefaultProbeTimeout = 2 * time.Second
)

// Config configures a Monitor.
type Config struct {
	// Client is the Temporal client probed (required); a lazy one, see the package doc.
	Client client.Client
	// NewWorker builds the worker (activities and workflows registered) that Run starts once
	// Temporal answers; a worker whose start failed is dropped and a new one built at the next
	// probe. Nil: no worker.
	NewWorker func() worker.Worker
	// Interval between probes (default DefaultInterval).
	Interval time.Duration
	// ProbeTimeout bounds one probe (default DefaultProbeTimeout).
	ProbeTimeout time.Duration
	// Logger (default: discard).
	Logger *slog.Logger
}

// Monitor probes Temporal and attaches a worker when it answers. Create it with New.
type Monitor struct {
	cfg Config

	mu     sync.Mutex
	err    error // nil: Temporal answered the last probe and the worker (if any) runs
	worker worker.Worker
	down   bool // a "down" line was logged and no "up" line since
}

// New returns a Monitor; Err reports ErrUnavailable until the first probe succeeds.
func New(cfg Config) (*Monitor, error) {
	if cfg.Client == nil {
		return nil, errors.New("temporalconn: Client is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Monitor{cfg: cfg, err: fmt.Errorf("%w: not probed yet", ErrUnavailable)}, nil
}

// Err is nil when Temporal answered the last probe and the worker runs; otherwise it wraps
// ErrUnavailable or ErrWorkerDetached.
func (m *Monitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Available reports whether Temporal answered the last probe (the worker may still be starting).
func (m *Monitor) Available() bool {
	err := m.Err()
	return err == nil || errors.Is(err, ErrWorkerDetached)
}

// WorkerAttached reports whether the worker has started.
func (m *Monitor) WorkerAttached() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.worker != nil
}

// Run probes until ctx ends, then stops the worker (which finishes its running tasks) and
// returns.
func (m *Monitor) Run(ctx context.Context) {
	for {
		m.Probe(ctx)
		select {
		case <-ctx.Done():
			m.mu.Lock()
			w := m.worker
			m.worker = nil
			m.mu.Unlock()
			if w != nil {
				w.Stop()
			}
			return
		case <-time.After(m.cfg.Interval):
		}
	}
}

// Probe asks Temporal for its health once and starts the worker if it answers and none runs.
// Run calls it; tests may call it directly.
func (m *Monitor) Probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout)
	_, err := m.cfg.Client.CheckHealth(pctx, &client.CheckHealthRequest{})
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		m.setDown(fmt.Errorf("%w: %w", ErrUnavailable, err))
		return
	}
	m.mu.Lock()
	need := m.worker == nil && m.cfg.NewWorker != nil
	m.mu.Unlock()
	if need {
		w := m.cfg.NewWorker()
		if err := w.Start(); err != nil {
			m.setDown(fmt.Errorf("%w: start: %w", ErrWorkerDetached, err))
			return
		}
		m.mu.Lock()
		m.worker = w
		m.mu.Unlock()
		m.cfg.Logger.Info("temporal worker attached")
	}
	m.mu.Lock()
	wasDown := m.down
	m.err, m.down = nil, false
	m.mu.Unlock()
	if wasDown {
		m.cfg.Logger.Info("temporal is available again")
	}
}

// setDown records err and logs it once per outage.
func (m *Monitor) setDown(err error) {
	m.mu.Lock()
	wasDown := m.down
	m.err, m.down = err, true
	m.mu.Unlock()
	if !wasDown {
		m.cfg.Logger.Warn("temporal is unavailable; retrying in the background", "err", err)
	}
}

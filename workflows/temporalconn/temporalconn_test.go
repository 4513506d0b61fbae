package temporalconn_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows/temporalconn"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func lazyClient(t *testing.T, hostPort, namespace string) client.Client {
	t.Helper()
	c, err := client.NewLazyClient(client.Options{HostPort: hostPort, Namespace: namespace,
		Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatalf("lazy client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestNewRequiresClient(t *testing.T) {
	t.Parallel()
	if _, err := temporalconn.New(temporalconn.Config{}); err == nil {
		t.Fatal("New without a client = nil error, want one")
	}
}

// TestUnreachableTemporal: probes of a Temporal that does not answer report ErrUnavailable,
// build no worker, and log the outage once.
func TestUnreachableTemporal(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	built := 0
	m, err := temporalconn.New(temporalconn.Config{
		Client:       lazyClient(t, closedAddr(t), "default"),
		NewWorker:    func() worker.Worker { built++; return nil },
		ProbeTimeout: 200 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(m.Err(), temporalconn.ErrUnavailable) || m.Available() {
		t.Errorf("before the first probe: Err = %v, Available = %v; want ErrUnavailable, false", m.Err(), m.Available())
	}
	for range 2 {
		m.Probe(context.Background())
	}
	if !errors.Is(m.Err(), temporalconn.ErrUnavailable) || m.Available() || m.WorkerAttached() || built != 0 {
		t.Errorf("after probes: Err = %v, Available = %v, attached = %v, workers built = %d", m.Err(), m.Available(), m.WorkerAttached(), built)
	}
	if n := strings.Count(logs.String(), "retrying in the background"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, logs)
	}
}

func echo(_ workflow.Context, s string) (string, error) { return s, nil }

// TestWorkerAttachesWhenTemporalComesBack: a monitor started while Temporal is down attaches its
// worker once Temporal starts, the worker runs a workflow, and Run stops it when ctx ends.
func TestWorkerAttachesWhenTemporalComesBack(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := devstacktest.OwnTemporal(t)
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop temporal: %v", err)
	}
	c := lazyClient(t, srv.HostPort, srv.Namespace)
	queue := devstacktest.UniqueName(t, "q")
	m, err := temporalconn.New(temporalconn.Config{
		Client: c,
		NewWorker: func() worker.Worker {
			w := worker.New(c, queue, worker.Options{})
			w.RegisterWorkflow(echo)
			return w
		},
		Interval:     50 * time.Millisecond,
		ProbeTimeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(runCtx) }()
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return errors.Is(m.Err(), temporalconn.ErrUnavailable) && !strings.Contains(m.Err().Error(), "not probed yet")
	}, "the monitor reports Temporal unavailable")
	if m.WorkerAttached() {
		t.Error("worker attached while Temporal is down")
	}

	if err := srv.Start(ctx); err != nil {
		t.Fatalf("start temporal again: %v", err)
	}
	devstacktest.Eventually(t, time.Minute, func() bool { return m.Err() == nil && m.WorkerAttached() },
		"the worker attaches once Temporal is back")
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: queue}, echo, "back")
	if err != nil {
		t.Fatalf("execute: %v", err)
	}
	var got string
	if err := run.Get(ctx, &got); err != nil || got != "back" {
		t.Fatalf("workflow result = %q, %v; want %q", got, err, "back")
	}
	stop()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Run did not return after its context ended")
	}
	if m.WorkerAttached() {
		t.Error("worker still attached after Run returned")
	}
}

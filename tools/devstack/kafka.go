package devstack

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaConfig says where and how to run the Kafka-protocol broker (tools/cmd/kafkad).
type KafkaConfig struct {
	Name string // process name; default "kafka"
	Bin  string // path of the kafkad binary (see BuildKafkad)
	Dir  string // base directory: data in Dir/data; created if missing
	Port int    // 0 picks a free port
	Mode Mode
}

// Kafka is one running kafkad broker.
type Kafka struct {
	cfg  KafkaConfig
	proc *process
	// Addr is "127.0.0.1:port", the bootstrap address.
	Addr string
}

// StartKafka starts kafkad with persistence in Dir/data and waits until it answers metadata
// requests.
func StartKafka(ctx context.Context, cfg KafkaConfig) (*Kafka, error) {
	if cfg.Port == 0 {
		var out *Kafka
		err := retryPorts(true, func() error {
			c := cfg
			p, err := FreePort()
			if err != nil {
				return err
			}
			c.Port = p
			out, err = StartKafka(ctx, c)
			return err
		})
		return out, err
	}
	if cfg.Name == "" {
		cfg.Name = "kafka"
	}
	if cfg.Bin == "" {
		return nil, fmt.Errorf("%w: kafkad binary path not set (build tools/cmd/kafkad)", ErrMissing)
	}
	if _, err := os.Stat(cfg.Bin); err != nil {
		return nil, fmt.Errorf("%w: kafkad binary %s: build it with `make tools`", ErrMissing, cfg.Bin)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("kafka dir: %w", err)
	}
	k := &Kafka{cfg: cfg, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))}
	k.proc = newProcess(cfg.Name, cfg.Dir, cfg.Mode, cfg.Bin,
		"-addr", k.Addr, "-data-dir", filepath.Join(cfg.Dir, "data"))
	if err := k.Start(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// Start starts the broker (again) and waits until it is healthy.
func (k *Kafka) Start(ctx context.Context) error {
	return k.proc.startServer(ctx, k.cfg.Port, "answering metadata requests", k.Health)
}

// Health asks the broker for cluster metadata.
func (k *Kafka) Health(ctx context.Context) error { return ProbeKafka(ctx, k.Addr) }

// ProbeKafka asks the broker at addr for cluster metadata.
func ProbeKafka(ctx context.Context, addr string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequestRetries(0), kgo.RetryTimeout(time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	return cl.Ping(ctx)
}

// Port returns the broker's TCP port.
func (k *Kafka) Port() int { return k.cfg.Port }

// PID returns the broker's process id.
func (k *Kafka) PID() int { return k.proc.PID() }

// Stop shuts the broker down cleanly (it flushes its data directory).
func (k *Kafka) Stop() error { return k.proc.stop(15 * time.Second) }

// Kill kills the broker with SIGKILL, as a crash would.
func (k *Kafka) Kill() error { return k.proc.kill() }

// Restart kills the broker if it runs and starts it again on the same port and data.
func (k *Kafka) Restart(ctx context.Context) error {
	if err := k.Kill(); err != nil {
		return err
	}
	return k.Start(ctx)
}

// LogPath returns the path of the broker's log file.
func (k *Kafka) LogPath() string { return k.proc.logPath }

package devstack

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
)

// SearchAttribute is a custom search attribute registered on a dev server: its name and its
// type as `temporal server start-dev --search-attribute` spells it (Keyword, Int, ...).
type SearchAttribute struct {
	Name, Type string
}

// SearchAttributes are the custom search attributes distcache's workflows set, so that builds
// can be filtered in the Temporal UI (`DistcachePhase = "failed"`). The contract is
// workflows.SearchAttributes; a test in workflows keeps the two lists equal. Every dev server
// of `make up` and of the tests (devstacktest) registers them.
var SearchAttributes = []SearchAttribute{
	{"DistcacheProjection", "Keyword"},
	{"DistcacheGeneration", "Int"},
	{"DistcachePhase", "Keyword"},
}

// TemporalConfig says where and how to run Temporal's dev server (`temporal server start-dev`).
type TemporalConfig struct {
	Name     string // process name; default "temporal"
	Bin      string // path of the temporal CLI (see BuildTemporal)
	Dir      string // base directory (SQLite file, logs); created if missing
	Port     int    // frontend gRPC port; 0 picks a free port
	UIPort   int    // Web UI port; 0 picks a free port
	Headless bool   // no Web UI (tests)
	Mode     Mode
	// SearchAttributes are registered in the default namespace at start (--search-attribute);
	// an already running server that a Detached start adopts gets the missing ones added.
	SearchAttributes []SearchAttribute
}

// Temporal is one running Temporal dev server.
type Temporal struct {
	cfg  TemporalConfig
	proc *process
	// HostPort is the frontend address, "127.0.0.1:port".
	HostPort string
	// Namespace is the namespace the dev server creates ("default").
	Namespace string
	// UIURL is the Web UI's base URL; empty when headless.
	UIURL string
}

// StartTemporal starts the dev server and waits until its frontend reports healthy.
func StartTemporal(ctx context.Context, cfg TemporalConfig) (*Temporal, error) {
	if cfg.Name == "" {
		cfg.Name = "temporal"
	}
	for _, p := range []*int{&cfg.Port, &cfg.UIPort} {
		if *p == 0 {
			fp, err := FreePort()
			if err != nil {
				return nil, err
			}
			*p = fp
		}
	}
	if cfg.Bin == "" {
		return nil, fmt.Errorf("%w: temporal CLI path not set (build it with `make tools`)", ErrMissing)
	}
	if _, err := os.Stat(cfg.Bin); err != nil {
		return nil, fmt.Errorf("%w: temporal CLI %s: build it with `make tools`", ErrMissing, cfg.Bin)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("temporal dir: %w", err)
	}
	httpPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	metricsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	t := &Temporal{cfg: cfg, HostPort: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)), Namespace: "default"}
	args := []string{cfg.Bin, "server", "start-dev",
		"--ip", "127.0.0.1",
		"--port", strconv.Itoa(cfg.Port),
		"--http-port", strconv.Itoa(httpPort),
		"--metrics-port", strconv.Itoa(metricsPort),
		"--db-filename", filepath.Join(cfg.Dir, "temporal.db"),
		"--log-level", "warn",
	}
	for _, sa := range cfg.SearchAttributes {
		args = append(args, "--search-attribute", sa.Name+"="+sa.Type)
	}
	if cfg.Headless {
		args = append(args, "--headless")
	} else {
		args = append(args, "--ui-ip", "127.0.0.1", "--ui-port", strconv.Itoa(cfg.UIPort))
		t.UIURL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.UIPort))
	}
	t.proc = newProcess(cfg.Name, cfg.Dir, cfg.Mode, args...)
	if err := t.Start(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// Start starts the server (again) and waits until it is healthy.
func (t *Temporal) Start(ctx context.Context) error {
	if t.cfg.Mode == Detached && t.proc.adopt() {
		if err := t.Health(ctx); err == nil {
			// Started before its configuration named these attributes (an older `make up`).
			return EnsureSearchAttributes(ctx, t.HostPort, t.Namespace, t.cfg.SearchAttributes)
		}
	}
	if !portFree(t.cfg.Port) {
		return fmt.Errorf("%s: port %d is already in use by another program", t.cfg.Name, t.cfg.Port)
	}
	// The dev server picks the ports of its internal services (history,
	// matching, worker) itself: free when it looks, not always when it binds,
	// on a machine where other processes open ports meanwhile (parallel
	// tests). It then exits with "address already in use" (or panics on the
	// listener it did not get); such a start is tried again, with ports
	// picked afresh.
	for attempt := 1; ; attempt++ {
		var logAt int64 // where this attempt's output starts in the (appended) log
		if fi, err := os.Stat(t.proc.logPath); err == nil {
			logAt = fi.Size()
		}
		if err := t.proc.start(); err != nil {
			return err
		}
		err := t.proc.waitUntil(ctx, "healthy", t.Health)
		if err == nil || attempt == startAttempts || !t.proc.exited() || !portTaken(t.proc.logPath, logAt) {
			return err
		}
	}
}

// portTaken reports whether the log at path, from offset at on, says a
// listener could not bind its address.
func portTaken(path string, at int64) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < at {
		return false
	}
	return strings.Contains(string(b[at:]), "address already in use")
}

// startAttempts is how many times Start runs the dev server when it exits
// because a port it picked was taken.
const startAttempts = 3

// Health asks the frontend for its health and checks the default namespace exists.
func (t *Temporal) Health(ctx context.Context) error {
	return ProbeTemporal(ctx, t.HostPort, t.Namespace)
}

// ProbeTemporal checks the frontend at hostPort is healthy and namespace exists.
func ProbeTemporal(ctx context.Context, hostPort, namespace string) error {
	c, err := client.DialContext(ctx, client.Options{HostPort: hostPort, Namespace: namespace, Logger: quietLogger{}})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return err
	}
	nc, err := client.NewNamespaceClient(client.Options{HostPort: hostPort, Logger: quietLogger{}})
	if err != nil {
		return err
	}
	defer nc.Close()
	_, err = nc.Describe(ctx, namespace)
	return err
}

// EnsureSearchAttributes registers in namespace the attributes of attrs that the server at
// hostPort does not have yet (`temporal operator search-attribute create`).
func EnsureSearchAttributes(ctx context.Context, hostPort, namespace string, attrs []SearchAttribute) error {
	if len(attrs) == 0 {
		return nil
	}
	c, err := client.DialContext(ctx, client.Options{HostPort: hostPort, Namespace: namespace, Logger: quietLogger{}})
	if err != nil {
		return err
	}
	defer c.Close()
	have, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes: %w", err)
	}
	add := map[string]enumspb.IndexedValueType{}
	for _, sa := range attrs {
		if _, ok := have.GetCustomAttributes()[sa.Name]; ok {
			continue
		}
		typ, err := enumspb.IndexedValueTypeFromString(sa.Type)
		if err != nil || typ == enumspb.INDEXED_VALUE_TYPE_UNSPECIFIED {
			return fmt.Errorf("search attribute %s: unknown type %q", sa.Name, sa.Type)
		}
		add[sa.Name] = typ
	}
	if len(add) == 0 {
		return nil
	}
	if _, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: add,
	}); err != nil {
		return fmt.Errorf("add search attributes: %w", err)
	}
	return nil
}

// Port returns the frontend port.
func (t *Temporal) Port() int { return t.cfg.Port }

// PID returns the server's process id.
func (t *Temporal) PID() int { return t.proc.PID() }

// Stop shuts the server down.
func (t *Temporal) Stop() error { return t.proc.stop(15 * time.Second) }

// Restart stops the server and starts it again on the same ports and database file (its
// namespaces and workflows survive), waiting until it is healthy.
func (t *Temporal) Restart(ctx context.Context) error {
	if err := t.Stop(); err != nil {
		return fmt.Errorf("%s: stop: %w", t.cfg.Name, err)
	}
	return t.Start(ctx)
}

// Kill kills the server with SIGKILL.
func (t *Temporal) Kill() error { return t.proc.kill() }

// LogPath returns the path of the server's log file.
func (t *Temporal) LogPath() string { return t.proc.logPath }

// quietLogger drops the SDK's own log lines during health checks.
type quietLogger struct{}

func (quietLogger) Debug(string, ...interface{}) {}
func (quietLogger) Info(string, ...interface{})  {}
func (quietLogger) Warn(string, ...interface{})  {}
func (quietLogger) Error(string, ...interface{}) {}

// Command demo runs distcache's whole pipeline on the embedded local stack (make demo). It expects
// the stack to be up (make up writes .run/stack.env). On it, it creates and seeds a sample core
// schema (users, orgs), builds and starts the three services and the example edge service
// (through e2e/pipeline, the harness the chaos and bench programs use too), registers two
// projections through the control-plane's REST API, then drives updates into the core database
// for DEMO_SECONDS (default 60) and measures, for sampled updates, how long each takes from COMMIT
// until the edge service answers with the new value. It prints a live table and a summary, and
// leaves everything running for exploring.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/distcache/distcache/e2e/pipeline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintf(os.Stderr, "\nmake demo failed: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	runDir := fs.String("run-dir", ".run", "the local stack's run directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*runDir)
	if err != nil {
		return err
	}
	env, err := readEnvFile(filepath.Join(abs, "stack.env"))
	if err != nil {
		return fmt.Errorf("the local stack is not up (%w): run `make up` first", err)
	}
	seconds, err := intEnv(getenv, "DEMO_SECONDS", 60)
	if err != nil {
		return err
	}
	users, err := intEnv(getenv, "DEMO_USERS", 100_000)
	if err != nil {
		return err
	}
	rate, err := intEnv(getenv, "DEMO_RATE", 200)
	if err != nil {
		return err
	}
	token, err := demoToken(filepath.Join(abs, "controlplane.token"))
	if err != nil {
		return err
	}
	cfg := Config{
		Stack: pipeline.Stack{
			CoreURL:           env["DISTCACHE_CORE_DATABASE_URL"],
			ControlURL:        env["DISTCACHE_CONTROL_DATABASE_URL"],
			RedisAddr:         env["DISTCACHE_REDIS_ADDR"],
			RedisReplicaAddrs: strings.Split(env["DISTCACHE_REDIS_REPLICA_ADDRS"], ","),
			KafkaBrokers:      env["DISTCACHE_KAFKA_BROKERS"],
			TemporalHostPort:  env["DISTCACHE_TEMPORAL_HOSTPORT"],
			TemporalUIURL:     env["DISTCACHE_TEMPORAL_UI_URL"],
		},
		RepoDir:     filepath.Dir(abs),
		RunDir:      abs,
		Ports:       DefaultPorts,
		Users:       users,
		Orgs:        1000,
		Rate:        rate,
		Period:      time.Duration(seconds) * time.Second,
		Token:       token,
		KeepRunning: true,
		Out:         os.Stdout,
	}
	sum, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	PrintSummary(os.Stdout, sum)
	fmt.Printf(`
The stack and the services are still running, for exploring:
  make status                                      every component, its address and health
  curl -s http://127.0.0.1:%[1]d/v1/users_by_email/user42@example.com
  curl -s -H "Authorization: Bearer $(cat %[2]s)" http://127.0.0.1:%[3]d/v1/projections
  curl -s -H "Authorization: Bearer $(cat %[2]s)" http://127.0.0.1:%[4]d/v1/models
  %[5]s                          the backfill workflows in the Temporal UI
Stop everything with: make down
`, cfg.Ports.Edge, filepath.Join(abs, "controlplane.token"), cfg.Ports.ControlHTTP, cfg.Ports.Publisher, cfg.Stack.TemporalUIURL)
	return nil
}

func intEnv(getenv func(string) string, name string, def int) (int, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive integer", name, v)
	}
	return n, nil
}

// demoToken returns the API token (control-plane and core-publisher) kept in path, making one on
// first use.
func demoToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write token file: %w", err)
	}
	return tok, nil
}

// readEnvFile reads KEY=VALUE lines.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New(path + " is empty")
	}
	return out, nil
}

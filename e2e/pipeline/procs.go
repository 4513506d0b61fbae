package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Proc is one running process of the pipeline, named for the part it plays.
type Proc struct {
	Name string
	PID  int // the process the pipeline started; its children belong to it (PostgreSQL's backends)
}

// Procs returns the pipeline's processes, for measuring the CPU each takes (the bench). Processes
// that are not running are left out. The Temporal dev server is left out: idle in a latency run.
func (p *Pipeline) Procs() []Proc {
	var out []Proc
	add := func(name string, pid int) {
		if pid > 0 {
			out = append(out, Proc{name, pid})
		}
	}
	if p.PG != nil {
		add("postgresql", p.PG.PID())
	}
	add("redis primary", p.Redis.PID())
	add("redis replica", p.RedisReplica.PID())
	if p.Kafka != nil {
		add("broker (kafkad)", p.Kafka.PID())
	}
	if p.Services != nil {
		add(NamePublisher, p.Publisher.PID())
		for i, pr := range p.Producers {
			name := NameProducer
			if i > 0 {
				name = fmt.Sprintf("%s-%d", NameProducer, i+1)
			}
			add(name, pr.PID())
		}
		add(NameControl, p.Control.PID())
	}
	return out
}

// PID is the program's process id, 0 when it is not running.
func (s *Program) PID() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prog == nil || s.prog.Exited() {
		return 0
	}
	return s.prog.PID()
}

// enableStatStatements loads pg_stat_statements into the server (a restart: it must be in
// shared_preload_libraries) with pg_stat_statements.track = track ("top" or "all").
// The extension itself is created in the core database once it exists.
func (p *Pipeline) enableStatStatements(ctx context.Context, track string) error {
	if track != "top" && track != "all" {
		return fmt.Errorf("%w: StatStatements %q, want top or all", ErrConfig, track)
	}
	conn, err := pgx.Connect(ctx, p.PG.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pg_stat_statements: %w", err)
	}
	_, err = conn.Exec(ctx, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
	conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("pg_stat_statements: %w", err)
	}
	if err := p.PG.Restart(ctx); err != nil {
		return fmt.Errorf("pg_stat_statements: restart: %w", err)
	}
	// With "all", statements run by functions too (the capture trigger's, one by one): a setting
	// the server knows only once the library is loaded, and a reload applies.
	if conn, err = pgx.Connect(ctx, p.PG.URL("postgres")); err != nil {
		return fmt.Errorf("pg_stat_statements: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET pg_stat_statements.track = "+pgx.Identifier{track}.Sanitize()); err != nil {
		return fmt.Errorf("pg_stat_statements: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pg_stat_statements: %w", err)
	}
	return nil
}

func createExtension(ctx context.Context, url, name string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("create extension %s: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create extension %s: %w", name, err)
	}
	return nil
}

// RestartWith stops the program gracefully and starts it again with the KEY=VALUE settings env
// added to (or replacing) its environment; they stay for later starts. The bench uses it to run
// the publisher with each compression codec on one pipeline.
func (s *Program) RestartWith(ctx context.Context, env ...string) error {
	if err := s.Stop(); err != nil {
		return fmt.Errorf("restart %s: %w", s.name, err)
	}
	s.mu.Lock()
	s.cfg.Env = mergeEnv(s.cfg.Env, env)
	s.mu.Unlock()
	return s.Start(ctx)
}

// mergeEnv returns base with each KEY=VALUE of set replacing base's setting of KEY, or added.
func mergeEnv(base, set []string) []string {
	out := slices.Clone(base)
	for _, kv := range set {
		k, _, _ := strings.Cut(kv, "=")
		out = slices.DeleteFunc(out, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		out = append(out, kv)
	}
	return out
}

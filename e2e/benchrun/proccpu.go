package benchrun

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/e2e/pipeline"
)

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on every Linux Go runs on).
const clockTick = 10 * time.Millisecond

// selfProc names the bench process in the CPU figures: the edge (a distcache.Client and its
// poller), the writers and the stage watchers.
const selfProc = "bench: edge + writers + watchers"

// procStat is the part of /proc/<pid>/stat the CPU figures use.
type procStat struct {
	ppid int
	cpu  time.Duration // utime + stime
	kids time.Duration // cutime + cstime: children that exited and were waited for
}

// parseProcStat reads one /proc/<pid>/stat line. The command name (field 2) is in parentheses
// and may hold spaces and parentheses itself, so the fields are counted after the last ')'.
func parseProcStat(line string) (procStat, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("proc stat %q: no command name", line)
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("proc stat %q: %d fields after the name, want ≥ 15", line, len(f))
	}
	var n [5]int64
	for j, k := range []int{1, 11, 12, 13, 14} { // ppid, utime, stime, cutime, cstime
		v, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("proc stat field %d: %w", k+3, err)
		}
		n[j] = v
	}
	return procStat{ppid: int(n[0]), cpu: time.Duration(n[1]+n[2]) * clockTick, kids: time.Duration(n[3]+n[4]) * clockTick}, nil
}

// readProcs reads every process's stat.
func readProcs() map[int]procStat {
	out := map[int]procStat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		if s, err := parseProcStat(string(bytes.TrimSpace(b))); err == nil {
			out[pid] = s
		}
	}
	return out
}

// treeCPU sums, per root, the CPU of the root and of every descendant, with the CPU of the
// children each of them has reaped (PostgreSQL's postmaster reaps its backends). The bench
// process itself counts only its own time: its children are the pipeline's processes.
func treeCPU(all map[int]procStat, roots []pipeline.Proc, self int) map[string]time.Duration {
	kids := map[int][]int{}
	for pid, s := range all {
		kids[s.ppid] = append(kids[s.ppid], pid)
	}
	out := map[string]time.Duration{}
	for _, r := range roots {
		var sum time.Duration
		stack := []int{r.PID}
		for len(stack) > 0 {
			pid := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if s, ok := all[pid]; ok {
				sum += s.cpu + s.kids
				stack = append(stack, kids[pid]...)
			}
		}
		out[r.Name] = sum
	}
	if s, ok := all[self]; ok {
		out[selfProc] = s.cpu
	}
	return out
}

// cpuMeter measures the CPU each process of the pipeline takes between start and stop.
type cpuMeter struct {
	roots []pipeline.Proc
	t0    map[string]time.Duration
}

func startCPU(roots []pipeline.Proc) *cpuMeter {
	return &cpuMeter{roots: roots, t0: treeCPU(readProcs(), roots, os.Getpid())}
}

// stop returns each process's CPU since start (processes that restarted meanwhile are left out).
func (m *cpuMeter) stop() map[string]time.Duration {
	t1 := treeCPU(readProcs(), m.roots, os.Getpid())
	out := map[string]time.Duration{}
	for k, v := range t1 {
		if v0, ok := m.t0[k]; ok && v >= v0 {
			out[k] = v - v0
		}
	}
	return out
}

// Statement is one statement's share of PostgreSQL's time in a run (pg_stat_statements).
type Statement struct {
	Query string
	Calls int64
	Time  time.Duration // total execution time
}

// resetStatements clears pg_stat_statements; false when the extension is not there.
func resetStatements(ctx context.Context, pool *pgxpool.Pool) bool {
	_, err := pool.Exec(ctx, "SELECT pg_stat_statements_reset()")
	return err == nil
}

// topStatements returns the n statements that took the most execution time since the reset.
func topStatements(ctx context.Context, pool *pgxpool.Pool, n int) ([]Statement, error) {
	rows, err := pool.Query(ctx, `SELECT regexp_replace(query, '\s+', ' ', 'g'), calls, total_exec_time
		FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	defer rows.Close()
	var out []Statement
	for rows.Next() {
		var s Statement
		var msec float64
		if err := rows.Scan(&s.Query, &s.Calls, &msec); err != nil {
			return nil, err
		}
		s.Time = time.Duration(msec * float64(time.Millisecond))
		out = append(out, s)
	}
	return out, rows.Err()
}

// WaitSample is how often PostgreSQL's active sessions were seen in one state during a run
// (pg_stat_activity sampled every waitSampleEvery): "CPU" when not waiting, else the wait event.
type WaitSample struct {
	State   string
	Samples int
}

const waitSampleEvery = 20 * time.Millisecond

// sampleWaits samples the core database's active sessions (but its own) until stop is closed,
// and returns the states seen, the most frequent first.
func sampleWaits(ctx context.Context, pool *pgxpool.Pool, stop <-chan struct{}) []WaitSample {
	counts := map[string]int{}
	t := time.NewTicker(waitSampleEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			out := make([]WaitSample, 0, len(counts))
			for s, n := range counts {
				out = append(out, WaitSample{s, n})
			}
			slices.SortFunc(out, func(a, b WaitSample) int { return b.Samples - a.Samples })
			return out
		case <-t.C:
		}
		rows, err := pool.Query(ctx, `SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*)
			FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'
			GROUP BY 1`)
		if err != nil {
			continue
		}
		for rows.Next() {
			var s string
			var n int
			if rows.Scan(&s, &n) == nil {
				counts[s] += n
			}
		}
		rows.Close()
	}
}

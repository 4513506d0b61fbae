// Package gctune sets the cache-producer's garbage-collector target and soft
// memory limit at start, unless the environment (GOGC, GOMEMLIMIT) decides.
package gctune

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// GCPercent is the garbage collector's target the cache-producer runs with
// unless GOGC is set. The write path allocates a decoded payload, a
// projected value and Redis arguments per record and keeps little alive
// besides the index cache, so the default of 100 spends a fifth of the CPU
// collecting; at 400 the collector's share drops to a few per cent.
const GCPercent = 400

// memoryLimitShare is the part of the container's memory limit the Go
// runtime is asked to stay under (GOMEMLIMIT) when none is given: with
// GOGC at 400 the heap may otherwise grow to five times the live data (the
// index cache holds about 100 MB per million entries).
const memoryLimitShare = 0.85

// Settings is what Tune set: "" where the environment decided.
type Settings struct {
	Percent     string // "400", or "" when GOGC is set
	MemoryLimit int64  // bytes, 0 when GOMEMLIMIT is set or no container limit was found
}

// Tune applies GCPercent unless GOGC is set, and, unless GOMEMLIMIT is
// set, a soft memory limit of 85% of the cgroup's memory limit when there is
// one (cgroup v2 memory.max or v1 memory.limit_in_bytes).
func Tune() Settings {
	var g Settings
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
		g.Percent = strconv.Itoa(GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit := cgroupMemoryLimit(); limit > 0 {
			g.MemoryLimit = int64(float64(limit) * memoryLimitShare)
			debug.SetMemoryLimit(g.MemoryLimit)
		}
	}
	return g
}

// cgroupMemoryLimit returns the process's cgroup memory limit in bytes, or 0
// when there is none (or it cannot be read).
func cgroupMemoryLimit() int64 {
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		return parseLimit(string(b))
	}
	return 0
}

// parseLimit reads a cgroup memory limit file's content: "max" or a huge
// value (cgroup v1's "unlimited") mean none.
func parseLimit(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0
	}
	return n
}

package projector

import (
	"os"
	"runtime/debug"
)

// GCPercent is the garbage collector's target the cache-producer runs with
// unless GOGC is set. The write path allocates a decoded payload, a
// projected value and Redis arguments per record and keeps little alive
// (the batches in flight), so the default of 100 spends a fifth of the CPU
// collecting; at 400 the heap may grow to five times the live data (tens of
// MB) and the collector's share drops to a few per cent.
const GCPercent = 400

// TuneGC applies GCPercent unless the GOGC environment variable is set, and
// returns the setting in effect ("" when GOGC decides).
func TuneGC() string {
	if os.Getenv("GOGC") != "" {
		return ""
	}
	debug.SetGCPercent(GCPercent)
	return "400"
}

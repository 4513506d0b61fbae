// Package distcache is the edge library of distcache: a Client that keeps an
// in-memory copy of the projections an edge service reads, and a Publisher
// that writes them into Redis.
//
// A Publisher (used by cache-producers, or by a core service directly) writes
// version-guarded values into a numbered generation of a projection, appends
// every write to that generation's change stream, and cuts readers over from
// one generation to the next. The Redis layout is specified in keys.go.
//
// A Client serves Get from a local bigcache (about a hundred nanoseconds),
// fills misses from Redis with one GET to one node (read replicas first, the
// primary when they fail; Redis Cluster with replica reads), coalesces
// concurrent misses of a key,
// remembers absent keys for a while, and tails each projection's change
// stream so that the keys it holds are updated in place within milliseconds
// of a write. It resumes its tail after a lost connection, revalidates only
// a projection whose stream position was trimmed away, follows cutovers
// without cold misses, keeps answering from memory while Redis is down (up
// to a staleness bound, marking such reads Stale) and while Redis is
// recovering from a loss of its data (a restart without persistence, a
// FLUSHALL: never replacing a held value by an absence read from it), tails
// the change streams from a read replica when there is one, and bounds its
// memory by MaxTTL, MaxBytes and MaxItems, evicting oldest first. With WithSnapshot it
// keeps a local snapshot of what it holds, so that it restarts (even while
// Redis is down) serving those entries and resumes the change stream where
// it stopped.
//
// WithOnChange reports each change the tail applies (on the tail goroutine,
// which it must not block), so that callers and tests can wait for a write to
// reach the edge instead of polling.
//
// Counters are read with Client.Stats; the distcacheprom sub-package exports
// them to Prometheus.
package distcache

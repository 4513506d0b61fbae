// Package integration holds libs/distcache's tests against real Redis servers (standalone,
// replicated, Cluster, Sentinel, TLS) that tools/devstacktest starts. They live in a module of
// their own so that the library's module requires nothing but its runtime dependencies: an edge
// team's `go mod tidy` never has to resolve this repository's local-stack tooling.
package integration

// Package bench holds libs/distcache's benchmarks against its peers (rueidis
// client-side caching, raw bigcache, bare go-redis): `go test -bench .` here,
// or `go run ./cmd/distcache-bench` for the same figures as a table.
//
// It is a module of its own so that the library's module requires neither
// rueidis nor the local stack (tools/devstack) that the benchmarks run on:
// services of other teams import libs/distcache, and its go.mod is what they
// inherit.
package bench

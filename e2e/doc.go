// Package e2e holds distcache's end-to-end programs: the chaos run (cmd/chaos, package chaos) that
// kills and restarts every component of the pipeline under a steady write load and then checks
// that nothing was lost, and the pipeline benchmark (cmd/bench, package benchrun). Package
// pipeline stands the whole pipeline up on a stack of its own (tools/tcpproxy cuts an edge's
// connection to Redis on demand). TestChaosShort (chaos_test.go) runs the chaos scenario in its
// short form as part of `make test`. TestDashboardsAndAlerts (observability_test.go) runs the
// pipeline with an examples/edge-service process and a real Prometheus, and checks that every
// metric the Grafana dashboards (deploy/grafana) and the alert rules (deploy/prometheus) use is
// exported and that every one of their expressions evaluates.
package e2e

package cpmetrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distcache/distcache/services/control-plane/internal/cpmetrics"
)

func TestNewRegistersEveryMetric(t *testing.T) {
	t.Parallel()
	m := cpmetrics.New()
	m.Requests.WithLabelValues("/m", "OK").Inc()
	m.Duration.WithLabelValues("/m").Observe(0.01)
	m.Panics.WithLabelValues("/m").Inc()
	for _, name := range []string{"distcache_controlplane_requests_total", "distcache_controlplane_request_duration_seconds", "distcache_controlplane_panics_total", "go_goroutines"} {
		n, err := testutil.GatherAndCount(m.Registry, name)
		if err != nil || n == 0 {
			t.Errorf("%s: %d series, %v; want registered and gathered", name, n, err)
		}
	}
	if n := cpmetrics.New(); n.Registry == m.Registry {
		t.Error("two New calls share a registry")
	}
}

package distcacheprom_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/distcache/distcacheprom"
)

type fakeSource struct{ s distcache.Stats }

func (f fakeSource) Stats() distcache.Stats { return f.s }

func TestCollector(t *testing.T) {
	src := fakeSource{distcache.Stats{Projections: []distcache.ProjectionStats{{
		Name: "users", Hits: 10, Misses: 2, EvictedMaxItems: 3, Items: 7, Generation: 4,
		StreamLag: 1500 * time.Millisecond, Connected: true,
		SnapshotWrites: 5, SnapshotBytes: 4096, SnapshotEntriesLoaded: 100,
	}}}}
	src.s.Projections[0].SnapshotRejections[distcache.SnapshotRejectChecksum] = 1
	src.s.Projections[0].Losses[distcache.LossRestart] = 2
	src.s.Projections[0].InLoss, src.s.Projections[0].LossPendingKeys = true, 12
	src.s.Projections[0].TailFromReplica, src.s.Projections[0].TailReplicaFallbacks = true, 3
	src.s.Projections[0].Reconnects = 4
	src.s.Projections[0].FetchLatency = distcache.Histogram{Bounds: []float64{0.001, 0.01}, Counts: []uint64{2, 5}, Count: 6, Sum: 30 * time.Millisecond}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(distcacheprom.NewCollector(src)); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					name += "{" + l.GetValue() + "}"
				}
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			if h := m.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
				got[name+"_sum"] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					got[fmt.Sprintf("%s_bucket{%g}", name, b.GetUpperBound())] = float64(b.GetCumulativeCount())
				}
			}
			got[name] = v
		}
	}
	want := map[string]float64{
		"distcache_client_hits_total":                 10,
		"distcache_client_misses_total":               2,
		"distcache_client_evictions_total{max_items}": 3,
		"distcache_client_evictions_total{max_ttl}":   0,
		"distcache_client_items":                      7,
		"distcache_client_generation":                 4,
		"distcache_client_stream_lag_seconds":         1.5,
		"distcache_client_connected":                  1,
		"distcache_client_stale":                      0,

		"distcache_client_snapshot_writes_total":                     5,
		"distcache_client_snapshot_write_errors_total":               0,
		"distcache_client_snapshot_bytes":                            4096,
		"distcache_client_snapshot_entries_loaded_total":             100,
		"distcache_client_snapshot_load_rejections_total{checksum}":  1,
		"distcache_client_snapshot_load_rejections_total{truncated}": 0,

		"distcache_client_redis_losses_total{restart}":          2,
		"distcache_client_redis_losses_total{pointer_vanished}": 0,
		"distcache_client_redis_loss":                           1,
		"distcache_client_redis_loss_pending_keys":              12,
		"distcache_client_tail_from_replica":                    1,
		"distcache_client_tail_replica_fallbacks_total":         3,
		"distcache_client_tail_reconnects_total":                4,
		"distcache_client_fetch_duration_seconds":               6,
		"distcache_client_fetch_duration_seconds_sum":           0.03,
		"distcache_client_fetch_duration_seconds_bucket{0.001}": 2,
		"distcache_client_fetch_duration_seconds_bucket{0.01}":  5,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, w)
		}
	}
}

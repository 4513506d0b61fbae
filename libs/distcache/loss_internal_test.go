package distcache

import (
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestInfoField(t *testing.T) {
	t.Parallel()
	info := "# Server\r\nredis_version:7.2.4\r\nrun_id:4f2c8d1e\r\nrun_id_extra:x\r\n\r\n# Replication\r\nrole:slave\r\n"
	tests := []struct{ field, want string }{
		{"run_id", "4f2c8d1e"},
		{"role", "slave"},
		{"redis_version", "7.2.4"},
		{"run", ""},
		{"missing", ""},
	}
	for _, tt := range tests {
		if got := infoField(info, tt.field); got != tt.want {
			t.Errorf("infoField(%q) = %q, want %q", tt.field, got, tt.want)
		}
	}
}

func TestStreamIDOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b     string
		less     bool
		isBehind bool // behind(a, b): a node whose stream ends at a has not reached b
	}{
		{"1-0", "2-0", true, true},
		{"2-0", "1-5", false, false},
		{"5-1", "5-2", true, true},
		{"5-2", "5-2", false, false},
		{"10-0", "9-99", false, false}, // numeric, not lexical
		{"", "3-0", false, true},       // no entry: behind any position
		{"", zeroID, false, false},     // nothing to reach
		{"3-0", zeroID, false, false},
	}
	for _, tt := range tests {
		if got := idLess(tt.a, tt.b); got != tt.less {
			t.Errorf("idLess(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.less)
		}
		if got := behind(tt.a, tt.b); got != tt.isBehind {
			t.Errorf("behind(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.isBehind)
		}
	}
}

func TestReplicaLinked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, info string
		want       bool
	}{
		{"linked", "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n", true},
		{"link down", "role:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:0\r\n", false},
		{"full sync", "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:1\r\n", false},
		{"a primary", "role:master\r\nconnected_slaves:1\r\n", false},
	}
	for _, tt := range tests {
		if got := replicaLinked(tt.info); got != tt.want {
			t.Errorf("%s: replicaLinked = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestLossReasonStrings(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, r := range LossReasons {
		s := r.String()
		if s == "unknown" || seen[s] {
			t.Errorf("LossReason %d: label %q", r, s)
		}
		seen[s] = true
	}
	if len(LossReasons) != numLossReasons {
		t.Errorf("LossReasons lists %d reasons, want %d", len(LossReasons), numLossReasons)
	}
}

// TestTailReplicas: only single-node replica clients of a standalone primary are tailed, and
// projections spread over them.
func TestTailReplicas(t *testing.T) {
	t.Parallel()
	node := func(addr string) *redis.Client { return redis.NewClient(&redis.Options{Addr: addr}) }
	failover := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}, ReplicaOnly: true})
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	r1, r2 := node("127.0.0.1:2"), node("127.0.0.1:3")
	t.Cleanup(func() {
		for _, c := range []redis.UniversalClient{failover, cluster, r1, r2} {
			_ = c.Close()
		}
	})
	tests := []struct {
		name string
		cfg  config
		want int
	}{
		{"standalone replicas", config{primary: node("127.0.0.1:1"), replicas: []redis.UniversalClient{r1, r2}, replicaTail: true}, 2},
		{"off", config{primary: node("127.0.0.1:1"), replicas: []redis.UniversalClient{r1, r2}}, 0},
		{"sentinel replica client", config{primary: node("127.0.0.1:1"), replicas: []redis.UniversalClient{failover, r1}, replicaTail: true}, 1},
		{"cluster", config{primary: cluster, replicas: []redis.UniversalClient{r1}, replicaTail: true}, 0},
	}
	for _, tt := range tests {
		if got := len(tailReplicas(&tt.cfg)); got != tt.want {
			t.Errorf("%s: %d replicas to tail, want %d", tt.name, got, tt.want)
		}
	}

	c := &Client{tailReplicas: []redis.UniversalClient{r1, r2, node("127.0.0.1:4")}, seed: 12345}
	count := make([]int, 3)
	for i := range 3000 {
		count[c.pickReplica("proj"+strconv.Itoa(i))]++
	}
	for i, n := range count {
		if n < 800 || n > 1200 {
			t.Errorf("replica %d tails %d of 3000 projections; want about 1000 each: %v", i, n, count)
		}
	}
	if got := (&Client{}).pickReplica("p"); got != -1 {
		t.Errorf("pickReplica without replicas = %d, want -1", got)
	}
}

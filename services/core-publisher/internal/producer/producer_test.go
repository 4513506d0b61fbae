package producer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/services/core-publisher/internal/pubtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

func TestCompactOnly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		policy string
		want   bool
	}{
		{"compact", true},
		{"compact,delete", false},
		{"delete, compact", false},
		{"delete", false},
		{"", false},
		{" compact ", true},
	}
	for _, tt := range tests {
		if got := compactOnly(tt.policy); got != tt.want {
			t.Errorf("compactOnly(%q): got %v, want %v", tt.policy, got, tt.want)
		}
	}
}

func recs(topic string, keys ...string) []*kgo.Record {
	out := make([]*kgo.Record, len(keys))
	for i, k := range keys {
		out[i] = &kgo.Record{Topic: topic, Key: []byte(k), Value: []byte(`{}`)}
	}
	return out
}

// TestTransactionalFence: once a second producer with the same
// transactional ID (the successor relay) has produced, the first one (a
// relay that lost its lease but still runs) can no longer write: its next
// batch fails and none of its records reach the topic after the successor's.
func TestTransactionalFence(t *testing.T) {
	t.Parallel()
	k := devstacktest.Kafka(t)
	ctx := context.Background()
	const topic = "distcache.fence"
	old, err := New([]kgo.Opt{kgo.SeedBrokers(k.Addr)}, WithReplicationFactor(1), WithTransactionalID("fence-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.EnsureTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if err := old.Produce(ctx, recs(topic, "a1", "a2")); err != nil {
		t.Fatalf("first producer, first batch: %v", err)
	}
	successor, err := New([]kgo.Opt{kgo.SeedBrokers(k.Addr)}, WithReplicationFactor(1), WithTransactionalID("fence-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Close()
	if err := successor.Produce(ctx, recs(topic, "b1")); err != nil {
		t.Fatalf("successor: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := old.Produce(pctx, recs(topic, "a3")); err == nil {
		t.Fatal("fenced producer: got nil error, want its batch refused")
	} else {
		t.Logf("fenced producer: %v", err)
	}
	if err := successor.Produce(ctx, recs(topic, "b2")); err != nil {
		t.Fatalf("successor after the fence: %v", err)
	}

	r := pubtest.NewReader(t, k.Addr, topic)
	r.ReadAll(t, k.Addr, topic)
	var got []string
	for _, e := range r.Events {
		got = append(got, e.Key)
	}
	if want := "a1,a2,b1,b2"; strings.Join(got, ",") != want {
		t.Errorf("topic: got %v, want %s (nothing of the fenced producer after the successor's first batch)", got, want)
	}
}

func TestEnsureTopicErrors(t *testing.T) {
	t.Parallel()
	err := error(&TopicError{Topic: "x", Reason: "has 2 partitions"})
	if !errors.Is(err, ErrTopicUnsuitable) || !strings.Contains(err.Error(), "topic x refused: has 2 partitions") {
		t.Errorf("TopicError: got %v", err)
	}
}

func TestNewMaxEventBytes(t *testing.T) {
	t.Parallel()
	conn := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	for _, tt := range []struct {
		n      int
		wantOK bool
	}{
		{1 << 20, true},
		{MaxEventBytesLimit, true},
		{MaxEventBytesLimit + 1, false},
		{0, false},
	} {
		p, err := New(conn, WithMaxEventSize(tt.n))
		if (err == nil) != tt.wantOK {
			t.Errorf("New(WithMaxEventSize(%d)): got err %v, want ok=%v", tt.n, err, tt.wantOK)
		}
		if p != nil {
			p.Close()
		}
	}
	for _, c := range append(Compressions, "brotli", "") {
		p, err := New(conn, WithCompression(c))
		wantOK := c != "brotli" && c != ""
		if (err == nil) != wantOK {
			t.Errorf("New(WithCompression(%q)): got err %v, want ok=%v", c, err, wantOK)
		}
		if err != nil && !strings.Contains(err.Error(), "none, lz4, zstd, snappy, gzip") {
			t.Errorf("New(WithCompression(%q)): error %q does not list the codecs", c, err)
		}
		if p != nil {
			p.Close()
		}
	}
	if got, want := BatchMaxBytes(1<<20), 1<<20+64<<10; got != want {
		t.Errorf("BatchMaxBytes(1 MiB): got %d, want %d", got, want)
	}
}

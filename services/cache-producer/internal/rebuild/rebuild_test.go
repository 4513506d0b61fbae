package rebuild_test

import (
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/services/cache-producer/internal/rebuild"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		offset   int64
		storedID string
		b        feed.Bounds
		want     string // detail prefix; "" when no rebuild
	}{
		{"topic missing", 12, "A", feed.Bounds{}, ""},
		{"within the topic", 12, "A", feed.Bounds{Exists: true, ID: "A", End: 12}, ""},
		{"past the end", 12, "A", feed.Bounds{Exists: true, ID: "A", End: 4}, "topic reset: stored offset 12 > end 4"},
		{"past the end, no ids", 12, "", feed.Bounds{Exists: true, End: 4}, "topic reset: stored offset 12 > end 4"},
		{"another incarnation", 12, "A", feed.Bounds{Exists: true, ID: "B", End: 40}, "topic re-created: topic id B, the stored offset 12 counts in A"},
		{"id unknown", 12, "", feed.Bounds{Exists: true, ID: "B", End: 40}, ""},
		{"broker without ids", 12, "A", feed.Bounds{Exists: true, End: 40}, ""},
		{"below the log start", 2, "A", feed.Bounds{Exists: true, ID: "A", Start: 5, End: 40}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, ok := rebuild.Check(tt.offset, tt.storedID, tt.b)
			if ok != (tt.want != "") || !strings.HasPrefix(c.Detail, tt.want) {
				t.Fatalf("Check = %+v, %v; want %q", c, ok, tt.want)
			}
			if ok && c.Reason != rebuild.ReasonTopicReset {
				t.Errorf("reason = %q, want %q", c.Reason, rebuild.ReasonTopicReset)
			}
		})
	}
}

func TestLost(t *testing.T) {
	t.Parallel()
	tg := projector.Target{Projection: "p", Generation: 3}
	mark := projector.Mark{Epoch: "e1", Offset: 40, Base: 0}
	at := func(off int64, epoch string) ledger.Position {
		return ledger.Position{Offset: off, OffsetKnown: true, Epoch: epoch}
	}
	tests := []struct {
		name       string
		mark       *projector.Mark
		pos        ledger.Position
		rb         *ledger.Rebuild
		backfilled int64
		want       string // detail; "" when not a loss
	}{
		{"as committed", &mark, at(40, "e1"), nil, 12, ""},
		{"moved on (another writer)", &mark, at(55, "e1"), nil, 12, ""},
		{"offset gone", &mark, ledger.Position{}, nil, 0, "data loss: p/g3: its offset is gone (offset 40 was committed under epoch e1)"},
		{"epoch gone", &mark, at(40, ""), nil, 0, "data loss: p/g3: its epoch is gone (epoch e1, offset 40 committed)"},
		{"another epoch", &mark, at(40, "e2"), nil, 0, "data loss: p/g3: its epoch is e2, not e1"},
		{"rebuilt elsewhere", &mark, at(0, "e2"), &ledger.Rebuild{Epoch: "e2"}, 0, ""},
		{"another rebuild's marker", &mark, at(0, "e3"), &ledger.Rebuild{Epoch: "e2"}, 0, "data loss: p/g3: its epoch is e3, not e1"},
		{"offset went back", &mark, at(30, "e1"), nil, 0, "data loss: p/g3: its offset 30 is below the offset 40 committed under epoch e1"},
		{"first start", nil, ledger.Position{}, nil, 0, ""},
		{"backfilled, nothing in Redis", nil, ledger.Position{}, nil, 12, "data loss: p/g3 has no offset in Redis, but the registry records its backfill to offset 12"},
		{"an epoch without offset", nil, ledger.Position{Epoch: "e1"}, nil, 0, "data loss: p/g3: its offset is gone (its epoch e1 is left)"},
		{"no memory, offset stored", nil, at(5, "e9"), nil, 12, ""},
		{"from before epochs", nil, at(5, ""), nil, 12, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var m projector.Mark
			if tt.mark != nil {
				m = *tt.mark
			}
			var rb ledger.Rebuild
			if tt.rb != nil {
				rb = *tt.rb
			}
			c, lost := rebuild.Lost(tg, m, tt.mark != nil, tt.pos, rb, tt.rb != nil, tt.backfilled)
			if lost != (tt.want != "") || c.Detail != tt.want {
				t.Fatalf("Lost = %+v, %v; want %q", c, lost, tt.want)
			}
			if lost && c.Reason != rebuild.ReasonDataLoss {
				t.Errorf("reason = %q, want %q", c.Reason, rebuild.ReasonDataLoss)
			}
		})
	}
}

func TestClockFloorGrows(t *testing.T) {
	t.Parallel()
	now := time.Now()
	if a, b := rebuild.ClockFloor(now), rebuild.ClockFloor(now.Add(time.Millisecond)); b-a != 1<<20 {
		t.Errorf("a millisecond raises the floor by %d, want 2^20", b-a)
	}
	if f := rebuild.ClockFloor(time.Date(2240, 1, 1, 0, 0, 0, 0, time.UTC)); f <= 0 {
		t.Errorf("ClockFloor overflows before 2240: %d", f)
	}
}

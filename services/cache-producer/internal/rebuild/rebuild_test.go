package rebuild_test

import (
	"strings"
	"testing"

	"github.com/distcache/distcache/services/cache-producer/internal/feed"
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

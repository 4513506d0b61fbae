package workflows_test

import (
	"log/slog"
	"path/filepath"
	"testing"

	tlog "go.temporal.io/sdk/log"
)

// TestReplayRecordedHistories replays histories recorded on the Temporal dev server
// (testdata/*.json, written by TestIntegration with DISTCACHE_RECORD_HISTORY=1) against the
// current workflow code: a change that would break a running workflow's determinism fails here.
func TestReplayRecordedHistories(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d recorded histories in testdata, want at least 2 (build_create.json, pointer_rollback.json)", len(files))
	}
	logger := tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			if err := newReplayer().ReplayWorkflowHistoryFromJSONFile(logger, f); err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
}

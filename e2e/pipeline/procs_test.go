package pipeline

import (
	"slices"
	"testing"
)

func TestMergeEnv(t *testing.T) {
	t.Parallel()
	base := []string{"A=1", "PUBLISHER_COMPRESSION=none", "AB=2"}
	got := mergeEnv(base, []string{"PUBLISHER_COMPRESSION=lz4", "A=3", "C=4"})
	want := []string{"AB=2", "PUBLISHER_COMPRESSION=lz4", "A=3", "C=4"}
	if !slices.Equal(got, want) {
		t.Errorf("mergeEnv = %v, want %v", got, want)
	}
	if base[1] != "PUBLISHER_COMPRESSION=none" {
		t.Errorf("mergeEnv changed its input: %v", base)
	}
}

package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseCounts(t *testing.T) {
	got, err := parseCounts("10, 100,1000")
	if err != nil || !slices.Equal(got, []int{10, 100, 1000}) {
		t.Errorf("parseCounts = %v, %v", got, err)
	}
	if got, err := parseCounts("0"); err != nil || len(got) != 0 {
		t.Errorf("0 means no edges runs: %v, %v", got, err)
	}
	if _, err := parseCounts("10,many"); err == nil || !strings.Contains(err.Error(), `"many"`) {
		t.Errorf("a bad count is named: %v", err)
	}
}

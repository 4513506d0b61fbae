package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestChartCopiesMatch: the chart cannot read files outside its directory (.Files), so it holds
// copies of the dashboards (deploy/grafana) and of the alert rules (deploy/prometheus) under
// files/. Those two directories are the source of truth; the copies must be byte for byte the
// same, and neither side may have a file the other lacks.
func TestChartCopiesMatch(t *testing.T) {
	t.Parallel()
	deploy := filepath.Join("..")
	chartFiles := filepath.Join(deploy, "helm", "distcache", "files")
	for _, dir := range []string{"grafana", "prometheus"} {
		src, cp := filepath.Join(deploy, dir), filepath.Join(chartFiles, dir)
		names := func(d string) []string {
			es, err := os.ReadDir(d)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, e := range es {
				out = append(out, e.Name())
			}
			return out
		}
		srcNames, cpNames := names(src), names(cp)
		if !slices.Equal(srcNames, cpNames) {
			t.Errorf("%s holds %v but the chart's copy %s holds %v: cp %s/* %s/", src, srcNames, cp, cpNames, src, cp)
			continue
		}
		if len(srcNames) == 0 {
			t.Errorf("%s is empty", src)
		}
		for _, n := range srcNames {
			a, err := os.ReadFile(filepath.Join(src, n))
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(cp, n))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s differs from its chart copy %s: edit %s and run cp %s %s", filepath.Join(src, n), filepath.Join(cp, n),
					filepath.Join("deploy", dir, n), filepath.Join("deploy", dir, n), filepath.Join("deploy/helm/distcache/files", dir, n))
			}
		}
	}
}

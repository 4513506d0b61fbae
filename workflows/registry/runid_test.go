package registry_test

import (
	"context"
	"testing"
)

// TestAllocateRecordsTheRun: a generation records the run of the workflow that allocated it (so
// GetStatus links that run); a retried allocation of the same workflow keeps the generation and
// records the run that retried; an allocation without a run leaves it empty.
func TestAllocateRecordsTheRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	const name = "runs"
	if err := s.CreateProjection(ctx, def(name)); err != nil {
		t.Fatal(err)
	}
	runOf := func(gen int64) string {
		t.Helper()
		g, err := s.GetGeneration(ctx, name, gen)
		if err != nil {
			t.Fatal(err)
		}
		return g.RunID
	}
	g1, _, err := s.AllocateGenerationForRun(ctx, def(name), "projection/"+name, "run-a")
	if err != nil || g1 != 1 {
		t.Fatalf("allocate = %d, %v; want 1", g1, err)
	}
	if got := runOf(1); got != "run-a" {
		t.Errorf("run of generation 1 = %q, want run-a", got)
	}
	again, _, err := s.AllocateGenerationForRun(ctx, def(name), "projection/"+name, "run-b")
	if err != nil || again != 1 {
		t.Fatalf("allocate again = %d, %v; want 1", again, err)
	}
	if got := runOf(1); got != "run-b" {
		t.Errorf("run of generation 1 after the second allocation = %q, want run-b", got)
	}
	g2, _, err := s.AllocateGeneration(ctx, def(name), "another")
	if err != nil || g2 != 2 {
		t.Fatalf("allocate without a run = %d, %v; want 2", g2, err)
	}
	gens, err := s.Generations(ctx, name)
	if err != nil || len(gens) != 2 {
		t.Fatalf("generations = %v, %v", gens, err)
	}
	if gens[0].RunID != "" || gens[1].RunID != "run-b" {
		t.Errorf("runs listed = %q, %q; want \"\", run-b", gens[0].RunID, gens[1].RunID)
	}
}

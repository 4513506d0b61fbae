package registry_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows/registry"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// newStore returns a Store on a fresh, migrated database.
func newStore(t *testing.T) (*registry.Store, *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := devstacktest.Database(t)
	if err := migrations.Up(ctx, url, migrations.Control); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return registry.New(pool), pool
}

func def(name string) projection.Definition {
	return projection.Definition{
		Name: name, Model: "users", KeyTemplate: "{email}", LowercaseKey: true,
		Fields: []string{"id", "email"},
		Filter: &projection.Filter{Field: "status", Op: projection.OpIn, Values: []string{"active", "new"}},
	}
}

func noSwap(context.Context, string, int64) error { return nil }

func TestCreateGetListDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)

	for _, n := range []string{"b", "a", "c"} {
		if err := s.CreateProjection(ctx, def(n)); err != nil {
			t.Fatalf("create %s: %v", n, err)
		}
	}
	if err := s.CreateProjection(ctx, def("a")); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("second create error = %v, want ErrExists", err)
	}
	got, err := s.GetProjection(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Definition.Equal(def("a")) || got.Current != 0 || got.Previous != 0 {
		t.Errorf("get = %+v, want %+v with no generations", got, def("a"))
	}
	page, err := s.ListProjections(ctx, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if names := projNames(page); !slices.Equal(names, []string{"a", "b"}) {
		t.Errorf("first page = %v, want [a b]", names)
	}
	page, _ = s.ListProjections(ctx, "b", 2)
	if names := projNames(page); !slices.Equal(names, []string{"c"}) {
		t.Errorf("second page = %v, want [c]", names)
	}

	// The pointer is cleared inside the delete's transaction: a failure leaves the projection.
	boom := errors.New("redis down")
	if _, err := s.DeleteProjection(ctx, "b", func(context.Context, string) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("delete b with a failing clear = %v, want it wrapped", err)
	}
	if _, err := s.GetProjection(ctx, "b"); err != nil {
		t.Fatalf("b after a failed delete: %v, want it still there", err)
	}
	var cleared []string
	gens, err := s.DeleteProjection(ctx, "b", func(_ context.Context, name string) error {
		cleared = append(cleared, name)
		return nil
	})
	if !slices.Equal(cleared, []string{"b"}) {
		t.Fatalf("pointers cleared by delete b = %v, want [b]", cleared)
	}
	if err != nil || len(gens) != 0 {
		t.Fatalf("delete b = %v, %v; want no generations", gens, err)
	}
	if _, err := s.GetProjection(ctx, "b"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("get deleted error = %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteProjection(ctx, "zz", nopClear); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("delete unknown error = %v, want ErrNotFound", err)
	}
	// A deleted name can be created again.
	if err := s.CreateProjection(ctx, def("b")); err != nil {
		t.Fatalf("re-create deleted: %v", err)
	}
}

func projNames(ps []registry.Projection) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestGenerationLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	const name = "users_by_email"
	if err := s.CreateProjection(ctx, def(name)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AllocateGeneration(ctx, def("nope"), "wf"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("allocate for unknown projection: %v, want ErrNotFound", err)
	}

	g1, cur, err := s.AllocateGeneration(ctx, def(name), "projection/"+name)
	if err != nil || g1 != 1 || cur != 0 {
		t.Fatalf("allocate = %d, %d, %v; want 1, 0", g1, cur, err)
	}
	// A retry of the same workflow's allocation gets the same generation.
	again, _, err := s.AllocateGeneration(ctx, def(name), "projection/"+name)
	if err != nil || again != 1 {
		t.Fatalf("retried allocate = %d, %v; want 1", again, err)
	}
	if err := s.SetState(ctx, name, 1, registry.StateBackfilling, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordProgress(ctx, name, 1, 500, 500, 1000); err != nil {
		t.Fatal(err)
	}
	end := int64(1000)
	if err := s.SetState(ctx, name, 1, registry.StateTailing, &end); err != nil {
		t.Fatal(err)
	}
	if err := s.SetState(ctx, name, 1, "bogus", nil); !errors.Is(err, registry.ErrPrecondition) {
		t.Errorf("unknown state error = %v, want ErrPrecondition", err)
	}
	gen, err := s.GetGeneration(ctx, name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if gen.State != registry.StateTailing || gen.RecordsDone != 500 || gen.Offset != 1000 || gen.EndOffset != 1000 ||
		gen.WorkflowID != "projection/"+name || !gen.Definition.Equal(def(name)) {
		t.Errorf("generation 1 = %+v", gen)
	}

	var swapped []int64
	swap := func(_ context.Context, p string, g int64) error {
		swapped = append(swapped, g)
		return nil
	}
	cur, prev, err := s.Cutover(ctx, name, 1, false, swap)
	if err != nil || cur != 1 || prev != 0 {
		t.Fatalf("cutover 1 = %d, %d, %v", cur, prev, err)
	}
	// The live generation cannot fail.
	if err := s.SetState(ctx, name, 1, registry.StateFailed, nil); !errors.Is(err, registry.ErrPrecondition) {
		t.Errorf("fail live generation error = %v, want ErrPrecondition", err)
	}

	// Update: generation 2 with a new field, then cutover.
	d2 := def(name)
	d2.Fields = append(d2.Fields, "name")
	g2, cur, err := s.AllocateGeneration(ctx, d2, "projection/"+name)
	if err != nil || g2 != 2 || cur != 1 {
		t.Fatalf("allocate 2 = %d, %d, %v; want 2, 1", g2, cur, err)
	}
	p, _ := s.GetProjection(ctx, name)
	if !slices.Equal(p.Fields, d2.Fields) {
		t.Errorf("definition of record fields = %v, want %v", p.Fields, d2.Fields)
	}
	// Not kept up to date yet: no cutover to it.
	if _, _, err := s.Cutover(ctx, name, 2, false, swap); !errors.Is(err, registry.ErrPrecondition) {
		t.Fatalf("cutover to allocated error = %v, want ErrPrecondition", err)
	}
	_ = s.SetState(ctx, name, 2, registry.StateTailing, nil)
	cur, prev, err = s.Cutover(ctx, name, 2, false, swap)
	if err != nil || cur != 2 || prev != 1 {
		t.Fatalf("cutover 2 = %d, %d, %v; want 2, 1", cur, prev, err)
	}
	wantStates(t, s, name, map[int64]string{1: registry.StateRetiring, 2: registry.StateLive})

	// Rollback to 1 while it is retained, and forward again.
	cur, prev, err = s.Cutover(ctx, name, 0, true, swap)
	if err != nil || cur != 1 || prev != 2 {
		t.Fatalf("rollback = %d, %d, %v; want 1, 2", cur, prev, err)
	}
	wantStates(t, s, name, map[int64]string{1: registry.StateLive, 2: registry.StateRetiring})
	// The retirement of 1 scheduled by the first cutover finds it current: nothing changes.
	if ok, err := s.MarkRetired(ctx, name, 1); err != nil || ok {
		t.Fatalf("mark current retired = %v, %v; want false", ok, err)
	}
	cur, prev, err = s.Cutover(ctx, name, 2, false, swap)
	if err != nil || cur != 2 || prev != 1 {
		t.Fatalf("cutover back to 2 = %d, %d, %v", cur, prev, err)
	}
	// Cutover to the current one again: no swap.
	n := len(swapped)
	if cur, _, err := s.Cutover(ctx, name, 2, false, swap); err != nil || cur != 2 || len(swapped) != n {
		t.Fatalf("repeat cutover = %d, %v, swaps %d→%d; want 2 and no swap", cur, err, n, len(swapped))
	}
	if want := []int64{1, 2, 1, 2}; !slices.Equal(swapped, want) {
		t.Errorf("swaps = %v, want %v", swapped, want)
	}

	// Retire 1: previous forgotten, rollback refused.
	if ok, err := s.MarkRetired(ctx, name, 1); err != nil || !ok {
		t.Fatalf("mark retired = %v, %v; want true", ok, err)
	}
	if _, _, err := s.Cutover(ctx, name, 0, true, swap); !errors.Is(err, registry.ErrPrecondition) {
		t.Errorf("rollback after retirement error = %v, want ErrPrecondition", err)
	}
	if err := s.SetState(ctx, name, 1, registry.StateTailing, nil); !errors.Is(err, registry.ErrPrecondition) {
		t.Errorf("revive retired error = %v, want ErrPrecondition", err)
	}
	p, _ = s.GetProjection(ctx, name)
	if p.Current != 2 || p.Previous != 0 {
		t.Errorf("projection current/previous = %d/%d, want 2/0", p.Current, p.Previous)
	}

	// Delete: the live generation is retired and reported, 1 (already retired) is not.
	gens, err := s.DeleteProjection(ctx, name, nopClear)
	if err != nil || !slices.Equal(gens, []int64{2}) {
		t.Fatalf("delete = %v, %v; want [2]", gens, err)
	}
	// A retried delete reports every generation.
	gens, err = s.DeleteProjection(ctx, name, nopClear)
	if err != nil || !slices.Equal(gens, []int64{1, 2}) {
		t.Fatalf("repeated delete = %v, %v; want [1 2]", gens, err)
	}
	// Re-created, numbering continues.
	if err := s.CreateProjection(ctx, def(name)); err != nil {
		t.Fatal(err)
	}
	if g, cur, err := s.AllocateGeneration(ctx, def(name), "projection/"+name); err != nil || g != 3 || cur != 0 {
		t.Fatalf("allocate after re-create = %d, %d, %v; want 3, 0", g, cur, err)
	}
}

func wantStates(t *testing.T, s *registry.Store, name string, want map[int64]string) {
	t.Helper()
	gens, err := s.Generations(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gens {
		if w, ok := want[g.Generation]; ok && g.State != w {
			t.Errorf("generation %d state = %s, want %s", g.Generation, g.State, w)
		}
	}
}

func TestCutoverSwapFailureRecordsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	if err := s.CreateProjection(ctx, def("p")); err != nil {
		t.Fatal(err)
	}
	g, _, _ := s.AllocateGeneration(ctx, def("p"), "wf")
	_ = s.SetState(ctx, "p", g, registry.StateTailing, nil)
	boom := errors.New("redis down")
	_, _, err := s.Cutover(ctx, "p", g, false, func(context.Context, string, int64) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("cutover error = %v, want the swap's error", err)
	}
	p, _ := s.GetProjection(ctx, "p")
	gen, _ := s.GetGeneration(ctx, "p", g)
	if p.Current != 0 || gen.State != registry.StateTailing {
		t.Errorf("after failed swap: current %d, state %s; want 0, tailing", p.Current, gen.State)
	}
	if _, _, err := s.Cutover(ctx, "p", g, false, noSwap); err != nil {
		t.Fatalf("cutover after the swap recovers: %v", err)
	}
}

func TestConcurrentAllocationsAreSerialised(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	if err := s.CreateProjection(ctx, def("p")); err != nil {
		t.Fatal(err)
	}
	const n = 8
	got := make(chan int64, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			g, _, err := s.AllocateGeneration(ctx, def("p"), "wf-"+string(rune('a'+i)))
			errs <- err
			got <- g
		}()
	}
	var gens []int64
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		gens = append(gens, <-got)
	}
	slices.Sort(gens)
	if want := []int64{1, 2, 3, 4, 5, 6, 7, 8}; !slices.Equal(gens, want) {
		t.Errorf("generations = %v, want %v (each allocation its own number)", gens, want)
	}
}

func TestAbandonProjection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	if err := s.CreateProjection(ctx, def("fresh")); err != nil {
		t.Fatal(err)
	}
	if err := s.AbandonProjection(ctx, "fresh"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetProjection(ctx, "fresh"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("abandoned fresh projection: get error %v, want ErrNotFound", err)
	}
	if err := s.CreateProjection(ctx, def("fresh")); err != nil {
		t.Fatalf("create after abandon: %v", err)
	}
}

func nopClear(context.Context, string) error { return nil }

// TestGenerationsInStates lists generations by state across projections, deleted ones included,
// ordered by projection and generation.
func TestGenerationsInStates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	off := int64(5)
	// "b": g1 live at offset 5, g2 tailing; "a": g1 live, then the projection deleted (retired).
	for _, n := range []string{"b", "a"} {
		if err := s.CreateProjection(ctx, def(n)); err != nil {
			t.Fatal(err)
		}
		g, _, err := s.AllocateGeneration(ctx, def(n), "wf-"+n+"1")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetState(ctx, n, g, registry.StateLive, &off); err != nil {
			t.Fatal(err)
		}
	}
	d2 := def("b")
	d2.Fields = []string{"id", "email", "name"}
	g2, _, err := s.AllocateGeneration(ctx, d2, "wf-b2")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetState(ctx, "b", g2, registry.StateTailing, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteProjection(ctx, "a", nopClear); err != nil {
		t.Fatal(err)
	}

	type row struct {
		proj  string
		gen   int64
		state string
	}
	list := func(states ...string) []row {
		t.Helper()
		gs, err := s.GenerationsInStates(ctx, states...)
		if err != nil {
			t.Fatalf("GenerationsInStates(%v): %v", states, err)
		}
		var out []row
		for _, g := range gs {
			out = append(out, row{g.Projection, g.Generation, g.State})
		}
		return out
	}
	if got, want := list(registry.StateTailing, registry.StateLive, registry.StateRetiring),
		[]row{{"b", 1, registry.StateLive}, {"b", 2, registry.StateTailing}}; !slices.Equal(got, want) {
		t.Errorf("active = %v, want %v", got, want)
	}
	if got, want := list(registry.StateRetired, registry.StateFailed), []row{{"a", 1, registry.StateRetired}}; !slices.Equal(got, want) {
		t.Errorf("ended = %v, want %v (a deleted projection's generation)", got, want)
	}
	gs, err := s.GenerationsInStates(ctx, registry.StateLive)
	if err != nil || len(gs) != 1 {
		t.Fatalf("live = %v, %v; want b/g1", gs, err)
	}
	if g := gs[0]; g.Offset != off || !g.Definition.Equal(def("b")) {
		t.Errorf("b/g1 = offset %d, definition %+v; want offset %d and its own definition snapshot", g.Offset, g.Definition, off)
	}
	if got := list(registry.StateAllocated); len(got) != 0 {
		t.Errorf("allocated = %v, want none", got)
	}
	if _, err := s.GenerationsInStates(ctx, "bogus"); !errors.Is(err, registry.ErrPrecondition) {
		t.Errorf("unknown state: %v, want ErrPrecondition", err)
	}
}

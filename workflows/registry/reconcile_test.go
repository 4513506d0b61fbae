package registry_test

import (
	"context"
	"errors"
	"testing"

	"github.com/distcache/distcache/workflows/registry"
)

// TestReconcilePointer: a missing or wrong pointer is restored to the registry's current
// generation; a right one is left alone; a projection with no current generation has nothing to
// restore; a deleted one is ErrNotFound.
func TestReconcilePointer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	if err := s.CreateProjection(ctx, def("p")); err != nil {
		t.Fatal(err)
	}
	pointer := int64(0)
	read := func(context.Context, string) (int64, error) { return pointer, nil }
	swaps := 0
	swap := func(_ context.Context, _ string, g int64) error { swaps++; pointer = g; return nil }

	if _, restored, err := s.ReconcilePointer(ctx, "p", read, swap); err != nil || restored {
		t.Errorf("no current generation: restored %v, %v; want nothing to do", restored, err)
	}
	g, _, _ := s.AllocateGeneration(ctx, def("p"), "wf")
	_ = s.SetState(ctx, "p", g, registry.StateTailing, nil)
	if _, _, err := s.Cutover(ctx, "p", g, false, swap); err != nil {
		t.Fatal(err)
	}
	swaps = 0
	if _, restored, err := s.ReconcilePointer(ctx, "p", read, swap); err != nil || restored || swaps != 0 {
		t.Errorf("pointer right: restored %v, swaps %d, %v; want left alone", restored, swaps, err)
	}
	for _, lost := range []int64{0, g + 7} {
		pointer = lost
		found, restored, err := s.ReconcilePointer(ctx, "p", read, swap)
		if err != nil || !restored || found != lost || pointer != g {
			t.Errorf("pointer %d: found %d, restored %v, now %d, %v; want restored to %d", lost, found, restored, pointer, err, g)
		}
	}
	pointer = 0
	bad := errors.New("garbage in the key")
	if _, restored, err := s.ReconcilePointer(ctx, "p", func(context.Context, string) (int64, error) { return 0, bad }, swap); err != nil || !restored || pointer != g {
		t.Errorf("unreadable pointer: restored %v, now %d, %v; want restored", restored, pointer, err)
	}
	if _, err := s.DeleteProjection(ctx, "p", func(context.Context, string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReconcilePointer(ctx, "p", read, swap); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("deleted projection: %v, want ErrNotFound", err)
	}
}

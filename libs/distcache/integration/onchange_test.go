package integration_test

import (
	"errors"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/distcache"
)

// TestOnChangeReportsAppliedChanges: WithOnChange's function is called for every change of the
// stream, after it is applied: a held key reports Updated and a Get right after the call returns
// the new value from memory (no GET reaches Redis); a key not held reports Updated false; a delete
// reports OpDelete and the next Get answers ErrNotFound, from memory too. The test waits on the
// calls, never on a clock.
func TestOnChangeReportsAppliedChanges(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	mustSet(t, pub, proj, 1, "held", 1)
	mustSet(t, pub, proj, 1, "other", 1)
	mustCutover(t, pub, proj, 1)

	changes := make(chan distcache.AppliedChange, 16)
	gets := &cmdCounter{}
	rdb.AddHook(gets) // counts the test's GETs too: compared before and after below
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithOnChange(func(ch distcache.AppliedChange) {
			select {
			case changes <- ch:
			default:
				t.Error("WithOnChange: the test's channel is full")
			}
		}))
	if _, err := c.Get(ctx, proj, "held"); err != nil {
		t.Fatal(err)
	}
	next := func(what string) distcache.AppliedChange {
		t.Helper()
		select {
		case ch := <-changes:
			return ch
		case <-time.After(wait):
			t.Fatalf("%s: no call of the WithOnChange function within %v", what, wait)
		}
		return distcache.AppliedChange{}
	}

	mustSet(t, pub, proj, 1, "held", 2)
	got := next("held key updated")
	want := distcache.AppliedChange{Projection: proj, Generation: 1, Key: "held", Version: 2, Op: distcache.OpSet, Updated: true}
	if got != want {
		t.Fatalf("held key updated: got %+v, want %+v", got, want)
	}
	before := gets.gets.Load()
	e, err := c.GetEntry(ctx, proj, "held")
	if err != nil || e.Version != 2 || string(e.Value) != string(val("held", 2)) {
		t.Fatalf("Get after the call: %+v, %v; want version 2", e, err)
	}
	if n := gets.gets.Load() - before; n != 0 {
		t.Fatalf("Get after the call read Redis (%d GETs); want it served from memory", n)
	}

	mustSet(t, pub, proj, 1, "other", 2)
	if got, want := next("key not held"), (distcache.AppliedChange{Projection: proj, Generation: 1, Key: "other",
		Version: 2, Op: distcache.OpSet}); got != want {
		t.Fatalf("key not held: got %+v, want %+v", got, want)
	}

	if _, err := pub.DeleteGen(ctx, proj, 1, "held", 3); err != nil {
		t.Fatal(err)
	}
	if got, want := next("held key deleted"), (distcache.AppliedChange{Projection: proj, Generation: 1, Key: "held",
		Version: 3, Op: distcache.OpDelete, Updated: true}); got != want {
		t.Fatalf("held key deleted: got %+v, want %+v", got, want)
	}
	if _, err := c.Get(ctx, proj, "held"); !errors.Is(err, distcache.ErrNotFound) {
		t.Fatalf("Get after the delete: %v; want ErrNotFound", err)
	}
	if n := gets.gets.Load() - before; n != 0 {
		t.Fatalf("Get after the delete read Redis (%d GETs); want it served from memory", n)
	}
	select {
	case ch := <-changes:
		t.Fatalf("an extra call: %+v", ch)
	default:
	}
}

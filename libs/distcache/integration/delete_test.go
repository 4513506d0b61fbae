package integration_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestDeletePointerReachesClients: Publisher.DeletePointer removes the pointer and appends a
// delete event atomically; a following client drops what it holds and answers ErrNoGeneration,
// a client started afterwards does too, and a later cutover brings the projection back.
func TestDeletePointerReachesClients(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	for i := range 5 {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))
	for i := range 5 {
		if v, err := c.Get(ctx, proj, keyN(i)); err != nil || !bytes.Equal(v, val(keyN(i), 1)) {
			t.Fatalf("Get(%s) before delete = %q, %v", keyN(i), v, err)
		}
	}

	start := time.Now()
	if err := pub.DeletePointer(ctx, proj); err != nil {
		t.Fatalf("DeletePointer: %v", err)
	}
	if n, err := rdb.Exists(ctx, distcache.PointerKey(proj)).Result(); err != nil || n != 0 {
		t.Fatalf("pointer key after DeletePointer: exists=%d, err=%v; want gone", n, err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		_, err := c.Get(ctx, proj, keyN(0))
		return errors.Is(err, distcache.ErrNoGeneration)
	}, "a held key is still served after DeletePointer")
	t.Logf("held key answered ErrNoGeneration %v after DeletePointer returned", time.Since(start))
	for i := range 5 {
		if v, err := c.Get(ctx, proj, keyN(i)); !errors.Is(err, distcache.ErrNoGeneration) {
			t.Fatalf("Get(%s) after delete = %q, %v; want ErrNoGeneration", keyN(i), v, err)
		}
	}
	if got := stats(c, proj).Deletes; got != 1 {
		t.Fatalf("Stats.Deletes = %d, want 1", got)
	}

	late := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))
	if _, err := late.Get(ctx, proj, keyN(0)); !errors.Is(err, distcache.ErrNoGeneration) {
		t.Fatalf("a client started after the delete: Get = %v, want ErrNoGeneration", err)
	}

	// Re-created: generation 2 goes live and both clients follow it.
	mustSet(t, pub, proj, 2, keyN(0), 7)
	mustCutover(t, pub, proj, 2)
	for name, cl := range map[string]*distcache.Client{"following": c, "late": late} {
		devstacktest.Eventually(t, wait, func() bool {
			v, err := cl.Get(ctx, proj, keyN(0))
			return err == nil && bytes.Equal(v, val(keyN(0), 7))
		}, "%s client does not serve generation 2 after the projection was re-created", name)
	}
}

// TestDeletePointerValidates: a bad projection name is refused before Redis is touched.
func TestDeletePointerValidates(t *testing.T) {
	t.Parallel()
	_, _, pub := standalone(t)
	if err := pub.DeletePointer(ctxT(t), "bad:name"); !errors.Is(err, distcache.ErrInvalidProjection) {
		t.Fatalf("DeletePointer(bad:name) = %v, want ErrInvalidProjection", err)
	}
}

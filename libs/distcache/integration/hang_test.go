package integration_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// deadlineSlack is how far past its deadline a miss may return on a loaded 2-core test machine.
// Without ContextTimeoutEnabled a miss took the client's 3 s ReadTimeout plus retries (5 s)
// whatever the deadline, so this bound tells the two apart by an order of magnitude.
const deadlineSlack = 400 * time.Millisecond

// TestDeadlineHoldsWhenRedisHangs: with the Redis process stopped (SIGSTOP: connections stay
// open, nothing answers), a miss fails within the caller's deadline, cached keys are served with
// no error, and the tail picks up changes again once Redis answers (SIGCONT).
func TestDeadlineHoldsWhenRedisHangs(t *testing.T) {
	t.Parallel()
	r, _, pub := standalone(t)
	ctx := ctxT(t)
	for i := range 3 {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithAddrs(r.Addr), distcache.WithProjections(proj),
		distcache.WithFetchTimeout(0)) // the caller's deadline alone bounds a miss
	if _, err := c.Get(ctx, proj, keyN(0)); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(r.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(r.PID(), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)

	for _, d := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond} {
		dctx, cancel := context.WithTimeout(ctx, d)
		start := time.Now()
		_, err := c.Get(dctx, proj, keyN(1))
		took := time.Since(start)
		cancel()
		if !errors.Is(err, distcache.ErrUnavailable) {
			t.Fatalf("miss with Redis stopped, deadline %v: err = %v, want ErrUnavailable", d, err)
		}
		if took > d+deadlineSlack {
			t.Fatalf("miss with Redis stopped, deadline %v, took %v", d, took)
		}
		t.Logf("miss with Redis stopped: deadline %v, failed after %v", d, took)
	}
	for range 100 {
		if v, err := c.Get(ctx, proj, keyN(0)); err != nil || !bytes.Equal(v, val(keyN(0), 1)) {
			t.Fatalf("cached key with Redis stopped = %q, %v", v, err)
		}
	}

	resume()
	mustSet(t, pub, proj, 1, keyN(0), 2)
	devstacktest.Eventually(t, wait, func() bool {
		v, err := c.Get(ctx, proj, keyN(0))
		return err == nil && bytes.Equal(v, val(keyN(0), 2))
	}, "the tail did not pick up a change after Redis answered again")
}

// TestDeadlineHoldsOnSilentServer: a server that accepts connections and never answers (a
// half-open path, a proxy that hangs). A miss fails within the deadline.
func TestDeadlineHoldsOnSilentServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	held := make(chan net.Conn, 64)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			held <- conn // read nothing, answer nothing
		}
	}()
	t.Cleanup(func() {
		for {
			select {
			case conn := <-held:
				_ = conn.Close()
			default:
				return
			}
		}
	})
	cfg := distcache.RedisConfig{Addrs: []string{ln.Addr().String()}}
	rdb, err := cfg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	if !distcache.HonoursDeadlines(rdb) {
		t.Fatal("a client built by RedisConfig does not honour deadlines")
	}
	const d = 200 * time.Millisecond
	dctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	err = rdb.Get(dctx, "k").Err()
	if took := time.Since(start); err == nil || took > d+deadlineSlack {
		t.Fatalf("GET on a silent server: err %v after %v, want an error within %v", err, took, d)
	}
	if distcache.HonoursDeadlines(redis.NewClient(&redis.Options{Addr: ln.Addr().String()})) {
		t.Fatal("HonoursDeadlines reports a client without ContextTimeoutEnabled as honouring them")
	}
}

package integration_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

// wait is how long the tests give a condition to come true (devstacktest.Eventually).
const wait = 10 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// standalone starts a Redis and returns it with a client and a publisher on it.
func standalone(t testing.TB, opts ...distcache.PublisherOption) (*devstack.Redis, *redis.Client, *distcache.Publisher) {
	t.Helper()
	r := devstacktest.Redis(t)
	rdb := r.Client()
	t.Cleanup(func() { _ = rdb.Close() })
	return r, rdb, newPublisher(t, rdb, opts...)
}

// edgeUserRedis starts a Redis with a password and an ACL user "edge"
// (password "edgepw") that may read the dc: keys and their streams, plus
// extra rules (e.g. "-dbsize"); it returns it with an admin client.
func edgeUserRedis(t testing.TB, extra ...any) (*devstack.Redis, *redis.Client) {
	t.Helper()
	r := devstacktest.RedisWith(t, devstack.RedisConfig{Password: "s3cret"})
	admin := redis.NewClient(&redis.Options{Addr: r.Addr, Password: "s3cret"})
	t.Cleanup(func() { _ = admin.Close() })
	rules := append([]any{"ACL", "SETUSER", "edge", "on", ">edgepw", "~dc:*", "+@read", "+@stream", "+ping", "+hello", "+auth", "+client"}, extra...)
	if err := admin.Do(ctxT(t), rules...).Err(); err != nil {
		t.Fatal(err)
	}
	return r, admin
}

func newPublisher(t testing.TB, rdb redis.UniversalClient, opts ...distcache.PublisherOption) *distcache.Publisher {
	t.Helper()
	pub, err := distcache.NewPublisher(rdb, opts...)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	return pub
}

// fastOpts make background loops quick enough for tests.
func fastOpts() []distcache.Option {
	return []distcache.Option{
		distcache.WithTailBlock(200 * time.Millisecond),
		distcache.WithEvictionInterval(20 * time.Millisecond),
		distcache.WithLocalShards(16),
	}
}

func newClient(t testing.TB, opts ...distcache.Option) *distcache.Client {
	t.Helper()
	c, err := distcache.New(ctxT(t), append(fastOpts(), opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func stats(c *distcache.Client, proj string) distcache.ProjectionStats {
	for _, p := range c.Stats().Projections {
		if p.Name == proj {
			return p
		}
	}
	return distcache.ProjectionStats{}
}

func val(key string, version int64) []byte {
	return []byte(fmt.Sprintf("%s@v%d", key, version))
}

// mustSet publishes key@version to generation gen.
func mustSet(t testing.TB, pub *distcache.Publisher, proj string, gen int64, key string, version int64) {
	t.Helper()
	if _, err := pub.SetGen(context.Background(), proj, gen, key, val(key, version), version); err != nil {
		t.Fatalf("SetGen(%s, %d): %v", key, version, err)
	}
}

func mustCutover(t testing.TB, pub *distcache.Publisher, proj string, gen int64) {
	t.Helper()
	if err := pub.Cutover(context.Background(), proj, gen); err != nil {
		t.Fatalf("Cutover(%s, %d): %v", proj, gen, err)
	}
}

// cmdCounter is a go-redis hook counting commands by name (and GETs by key).
type cmdCounter struct {
	gets atomic.Int64
	// onGet, if set, runs around each GET: before(key) then the command.
	before func(key string)
	after  func(key string)
}

func (h *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "get") {
			key, _ := cmd.Args()[1].(string)
			if !strings.Contains(key, "}:") { // not the pointer
				h.gets.Add(1)
				if h.before != nil {
					h.before(key)
				}
				err := next(ctx, cmd)
				if h.after != nil {
					h.after(key)
				}
				return err
			}
		}
		return next(ctx, cmd)
	}
}

func (h *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type atomicInt = atomic.Int64

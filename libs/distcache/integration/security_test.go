package integration_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestTLSAndACLUsers runs the publisher and a client against a Redis that
// speaks TLS only and requires ACL users: a producer user that may write
// dc:* and an edge user limited to reads. The client's WithAddrs, WithAuth
// and WithTLS reach Redis (first read, pushed updates), the edge user
// cannot write, and a wrong password, a missing TLS config or an untrusted
// CA each fail with an error that names the cause and never the password.
func TestTLSAndACLUsers(t *testing.T) {
	t.Parallel()
	files := devstacktest.TLSFiles(t)
	const adminPass, producerPass, edgePass = "admin-secret-1", "producer-secret-2", "edge-secret-3"
	r := devstacktest.RedisWith(t, devstack.RedisConfig{TLS: files, Password: adminPass})
	tlsConf := devstacktest.TLSConfig(t, files)
	ctx := ctxT(t)
	admin := r.Client()
	defer admin.Close()
	for _, acl := range [][]any{
		{"ACL", "SETUSER", "producer", "on", ">" + producerPass, "~dc:*", "&*", "+@all"},
		{"ACL", "SETUSER", "edge", "on", ">" + edgePass, "~dc:*", "&*", "+@read", "+@connection"},
	} {
		if err := admin.Do(ctx, acl...).Err(); err != nil {
			t.Fatalf("%v: %v", acl[:3], err)
		}
	}

	const p = "users_tls"
	prod := redis.NewClient(&redis.Options{Addr: r.Addr, Username: "producer", Password: producerPass, TLSConfig: tlsConf})
	defer prod.Close()
	pub := newPublisher(t, prod)
	if _, err := pub.SetGen(ctx, p, 1, "ada", []byte("v1"), 1); err != nil {
		t.Fatalf("publish over TLS as an ACL user: %v", err)
	}
	if err := pub.Cutover(ctx, p, 1); err != nil {
		t.Fatal(err)
	}

	c := newClient(t, distcache.WithAddrs(r.Addr), distcache.WithAuth("edge", edgePass), distcache.WithTLS(tlsConf),
		distcache.WithProjections(p))
	if got, err := c.Get(ctx, p, "ada"); err != nil || string(got) != "v1" {
		t.Fatalf("Get over TLS as the edge user = %q, %v", got, err)
	}
	if _, err := pub.SetGen(ctx, p, 1, "ada", []byte("v2"), 2); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, p, "ada")
		return err == nil && bytes.Equal(e.Value, []byte("v2")) && e.Version == 2
	}, "the pushed update never reached the client over TLS")

	// The edge user reads only.
	edgeRdb := redis.NewClient(&redis.Options{Addr: r.Addr, Username: "edge", Password: edgePass, TLSConfig: tlsConf})
	defer edgeRdb.Close()
	if _, err := newPublisher(t, edgeRdb).SetGen(ctx, p, 1, "ada", []byte("v3"), 3); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("publishing as the read-only edge user: err = %v, want NOPERM", err)
	}

	// Refusals fail fast, name the cause and do not show the password.
	bad := []struct {
		name, want, secret string
		opts               []distcache.Option
	}{
		{"wrong password", "WRONGPASS", "not-the-password-42",
			[]distcache.Option{distcache.WithAuth("edge", "not-the-password-42"), distcache.WithTLS(tlsConf)}},
		{"no TLS", "", edgePass, []distcache.Option{distcache.WithAuth("edge", edgePass)}},
		{"untrusted CA", "certificate", edgePass, []distcache.Option{distcache.WithAuth("edge", edgePass),
			distcache.WithTLS(devstacktest.TLSConfig(t, devstacktest.TLSFiles(t)))}},
	}
	for _, b := range bad {
		bc := newClient(t, append([]distcache.Option{distcache.WithAddrs(r.Addr)}, b.opts...)...)
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		t0 := time.Now()
		_, err := bc.Get(gctx, p, "ada")
		cancel()
		switch {
		case err == nil:
			t.Errorf("%s: Get succeeded", b.name)
		case !strings.Contains(err.Error(), b.want):
			t.Errorf("%s: error %q does not name %q", b.name, err, b.want)
		case strings.Contains(err.Error(), b.secret):
			t.Errorf("%s: error %q shows the password", b.name, err)
		case time.Since(t0) > 3500*time.Millisecond:
			t.Errorf("%s: failed after %v, past the caller's 3 s deadline", b.name, time.Since(t0))
		}
		t.Logf("%s: %v", b.name, err)
	}
}

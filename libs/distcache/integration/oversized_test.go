package integration_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
)

// TestOversizedValueRemovesThePreviousOne: a change whose value is too large is refused
// (ErrValueTooLarge), and the key's previous value is tombstoned at the refused change's version,
// through Apply, SetGen and WriteTx alike: no reader keeps serving a value a newer change
// replaced.
func TestOversizedValueRemovesThePreviousOne(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t, distcache.WithPublisherMaxValueBytes(10))
	ctx := ctxT(t)
	write := map[string]func(key string, version int64) error{
		"Apply": func(key string, version int64) error {
			res, err := pub.Apply(ctx, proj, 1, []distcache.Change{{Key: key, Value: make([]byte, 11), Version: version}})
			if err != nil {
				return err
			}
			return res[0].Err
		},
		"SetGen": func(key string, version int64) error {
			_, err := pub.SetGen(ctx, proj, 1, key, make([]byte, 11), version)
			return err
		},
		"WriteTx": func(key string, version int64) error {
			var res []distcache.Result
			_, err := rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				var err error
				res, err = pub.WriteTx(ctx, pipe, proj, 1, []distcache.Change{{Key: key, Value: make([]byte, 11), Version: version}})
				return err
			})
			if err != nil {
				return err
			}
			return res[0].Err
		},
	}
	keys := map[string]string{"Apply": "a", "SetGen": "s", "WriteTx": "w"} // short: "a@v1" fits the limit
	for name, refuse := range write {
		key := keys[name]
		mustSet(t, pub, proj, 1, key, 1)
		if err := refuse(key, 2); !errors.Is(err, distcache.ErrValueTooLarge) {
			t.Fatalf("%s of an 11-byte value with a 10-byte limit = %v, want ErrValueTooLarge", name, err)
		}
		stored, err := rdb.Get(context.Background(), distcache.ValueKey(proj, 1, key)).Result()
		if err != nil {
			t.Fatalf("%s: read the value key: %v", name, err)
		}
		version, perr := distcache.ParseVersionHex(stored)
		if perr != nil || version != 2 || stored[16] != 'd' {
			t.Fatalf("%s: stored %q after the refused change; want a tombstone at version 2", name, stored)
		}
	}
}

// Package pointer adapts distcache.Publisher to the workflows.Pointer interface: the Redis side of
// cutovers, retirements and deletes.
package pointer

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/workflows"
)

// Publisher adapts a *distcache.Publisher (and the Redis client it writes through) to
// workflows.Pointer.
type Publisher struct {
	*distcache.Publisher
	Redis redis.UniversalClient
}

var _ workflows.Pointer = Publisher{}

// ClearPointer deletes the projection's pointer (distcache.PointerKey) so that a deleted
// projection's last generation can be retired; readers then see distcache.ErrNoGeneration.
// distcache.Publisher has no such method yet, so the key is removed here by its documented name.
func (p Publisher) ClearPointer(ctx context.Context, proj string) error {
	if err := distcache.ValidateProjection(proj); err != nil {
		return err
	}
	if err := p.Redis.Del(ctx, distcache.PointerKey(proj)).Err(); err != nil {
		return fmt.Errorf("clear pointer of %s: %w", proj, err)
	}
	return nil
}

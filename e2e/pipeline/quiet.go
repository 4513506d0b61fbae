package pipeline

import (
	"context"

	"github.com/redis/go-redis/v9"
)

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}

// QuietRedisLog silences go-redis's process-wide logger, which prints a line per failed dial
// while Redis is deliberately down. Programs call it from main; tests from TestMain.
func QuietRedisLog() { redis.SetLogger(discardRedisLog{}) }

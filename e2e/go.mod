module github.com/distcache/distcache/e2e

go 1.26.8

require (
	github.com/jackc/pgx/v5 v5.12.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/twmb/franz-go v1.22.3
	golang.org/x/image v0.48.0
)

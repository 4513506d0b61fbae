module github.com/distcache/distcache/services/cache-producer

go 1.26.8

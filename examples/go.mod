module github.com/distcache/distcache/examples

go 1.26.8

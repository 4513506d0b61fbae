module github.com/distcache/distcache/e2e

go 1.26.8

require golang.org/x/image v0.48.0 // indirect

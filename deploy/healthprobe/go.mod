// Module healthprobe is the container health check of the distcache images: the images are
// distroless (no shell, no curl), so compose's healthcheck runs this static binary instead.
// It is its own module, outside go.work, with no dependencies; the Dockerfiles build it with
// GOWORK=off.
module github.com/distcache/distcache/deploy/healthprobe

go 1.26.8

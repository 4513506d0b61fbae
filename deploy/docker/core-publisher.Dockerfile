# syntax=docker/dockerfile:1.7
#
# core-publisher image. The build context is the repository root (the go.work workspace), so the
# service compiles against the libraries in this tree, not published versions:
#
#   docker build -f deploy/docker/core-publisher.Dockerfile -t distcache/core-publisher:dev .
#
# The binary is static (CGO_ENABLED=0) and runs as the distroless "nonroot" user (65532) on a
# base with no shell or package manager; healthprobe is the container's health check, since
# there is no curl either. core-publisher.Dockerfile.dockerignore keeps .git and .run out of the context.
#
# The image also carries distcache-migrate (migrations/cmd/migrate), the one program that applies
# the schema: the chart's migration Jobs run it (`distcache-migrate up core`, `... up control`)
# with credentials of their own, so the services' roles need no DDL rights.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-alpine AS build
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
WORKDIR /src
# Bind-mount the context instead of copying it: nothing of the source lands in a layer, and
# the module and build caches survive between builds.
RUN --mount=type=bind,target=/src \
    --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags='-s -w' -o /out/core-publisher ./services/core-publisher && \
    go build -trimpath -ldflags='-s -w' -o /out/distcache-migrate ./migrations/cmd/migrate && \
    cd deploy/healthprobe && GOWORK=off go build -trimpath -ldflags='-s -w' -o /out/healthprobe .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/core-publisher /out/distcache-migrate /out/healthprobe /usr/local/bin/
# Inside a container the service listens on every interface (its default is loopback only).
ENV PUBLISHER_HTTP_ADDR=:58081
EXPOSE 58081
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/healthprobe", "http://127.0.0.1:58081/healthz"]
ENTRYPOINT ["/usr/local/bin/core-publisher"]

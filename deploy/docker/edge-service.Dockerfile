# syntax=docker/dockerfile:1.7
#
# edge-service image: the example edge service (examples/edge-service), an HTTP API answering
# lookups from a distcache.Client, so `docker compose up` shows the whole path from a core
# database commit to an edge's answer. The build context is the repository root (the go.work
# workspace), so it links libs/distcache from this tree:
#
#   docker build -f deploy/docker/edge-service.Dockerfile -t distcache/edge-service:dev .
#
# The binary is static (CGO_ENABLED=0) and runs as the distroless "nonroot" user (65532) on a
# base with no shell or package manager; healthprobe is the container's health check, since
# there is no curl either. edge-service.Dockerfile.dockerignore keeps .git and .run out of the context.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-alpine AS build
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
WORKDIR /src
# Bind-mount the context instead of copying it: nothing of the source lands in a layer, and
# the module and build caches survive between builds.
RUN --mount=type=bind,target=/src \
    --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags='-s -w' -o /out/edge-service ./examples/edge-service && \
    cd deploy/healthprobe && GOWORK=off go build -trimpath -ldflags='-s -w' -o /out/healthprobe .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/edge-service /out/healthprobe /usr/local/bin/
# Inside a container the service listens on every interface (its default is loopback only).
ENV EDGE_HTTP_ADDR=:58095
EXPOSE 58095
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/healthprobe", "http://127.0.0.1:58095/healthz"]
ENTRYPOINT ["/usr/local/bin/edge-service"]

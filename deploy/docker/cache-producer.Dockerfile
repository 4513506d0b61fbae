# syntax=docker/dockerfile:1.7
#
# cache-producer image. The build context is the repository root (the go.work workspace), so the
# service compiles against the libraries in this tree, not published versions:
#
#   docker build -f deploy/docker/cache-producer.Dockerfile -t distcache/cache-producer:dev .
#
# The binary is static (CGO_ENABLED=0) and runs as the distroless "nonroot" user (65532) on a
# base with no shell or package manager; healthprobe is the container's health check, since
# there is no curl either. cache-producer.Dockerfile.dockerignore keeps .git and .run out of the context.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-alpine AS build
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
WORKDIR /src
# Bind-mount the context instead of copying it: nothing of the source lands in a layer, and
# the module and build caches survive between builds.
RUN --mount=type=bind,target=/src \
    --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags='-s -w' -o /out/cache-producer ./services/cache-producer && \
    cd deploy/healthprobe && GOWORK=off go build -trimpath -ldflags='-s -w' -o /out/healthprobe .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cache-producer /out/healthprobe /usr/local/bin/
# Inside a container the service listens on every interface (its default is loopback only).
ENV PRODUCER_HTTP_ADDR=:58082
EXPOSE 58082
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/healthprobe", "http://127.0.0.1:58082/healthz"]
ENTRYPOINT ["/usr/local/bin/cache-producer"]

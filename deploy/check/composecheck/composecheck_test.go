package composecheck

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goodDockerfile is a minimal Dockerfile that follows the rules.
const goodDockerfile = `# syntax=docker/dockerfile:1.7
ARG GO_VERSION=1.26.8
FROM golang:${GO_VERSION}-alpine AS build
RUN echo build
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /usr/local/bin/
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/app"]
`

// goodCompose follows every rule; the cases below break one rule each.
const goodCompose = `
name: t
services:
  db:
    image: postgres:17.5-alpine
    volumes:
      - db-data:/var/lib/postgresql/data
      - ./init.sql:/docker-entrypoint-initdb.d/init.sql:ro
    healthcheck:
      test: ["CMD-SHELL", "pg_isready"]
  setup:
    image: busybox:1.37.0
    command: ["true"]
    depends_on:
      db:
        condition: service_healthy
  app:
    build:
      context: .
      dockerfile: app.Dockerfile
    depends_on:
      db:
        condition: service_healthy
      setup:
        condition: service_completed_successfully
    ports: ["127.0.0.1:8080:8080"]
    healthcheck:
      test: ["CMD", "/usr/local/bin/healthprobe", "http://127.0.0.1:8080/healthz"]
volumes:
  db-data:
`

func writeProject(t *testing.T, compose, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"compose.yaml": compose, "app.Dockerfile": dockerfile, "init.sql": "select 1;\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "compose.yaml")
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		compose    string
		dockerfile string
		want       error  // nil: passes
		wantText   string // a substring of the error, naming what is wrong
	}{
		{name: "good", compose: goodCompose, dockerfile: goodDockerfile},
		{
			name:     "missing healthcheck",
			compose:  strings.Replace(goodCompose, "    healthcheck:\n      test: [\"CMD\", \"/usr/local/bin/healthprobe\", \"http://127.0.0.1:8080/healthz\"]\n", "", 1),
			want:     ErrNoHealthcheck,
			wantText: "service app",
		},
		{
			name:     "healthcheck disabled",
			compose:  strings.Replace(goodCompose, `test: ["CMD-SHELL", "pg_isready"]`, "disable: true", 1),
			want:     ErrNoHealthcheck,
			wantText: "service db",
		},
		{
			name:     "image without tag",
			compose:  strings.Replace(goodCompose, "postgres:17.5-alpine", "postgres", 1),
			want:     ErrUnpinnedImage,
			wantText: `"postgres" has no tag`,
		},
		{
			name:     "image on latest",
			compose:  strings.Replace(goodCompose, "busybox:1.37.0", "busybox:latest", 1),
			want:     ErrUnpinnedImage,
			wantText: "uses latest",
		},
		{
			name:     "tag that is not a version",
			compose:  strings.Replace(goodCompose, "postgres:17.5-alpine", "postgres:alpine", 1),
			want:     ErrUnpinnedImage,
			wantText: `tag "alpine" is not a version`,
		},
		{
			name:     "registry port is not a tag",
			compose:  strings.Replace(goodCompose, "postgres:17.5-alpine", "registry.local:5000/postgres", 1),
			want:     ErrUnpinnedImage,
			wantText: "has no tag",
		},
		{
			name:    "digest pins",
			compose: strings.Replace(goodCompose, "postgres:17.5-alpine", "postgres@sha256:"+strings.Repeat("a", 64), 1),
			want:    nil,
		},
		{
			name:     "depends_on without condition",
			compose:  strings.Replace(goodCompose, "    depends_on:\n      db:\n        condition: service_healthy\n  app:", "    depends_on: [db]\n  app:", 1),
			want:     ErrDependsCondition,
			wantText: `condition "service_started"`,
		},
		{
			name:     "one-shot job nobody waits for",
			compose:  strings.Replace(goodCompose, "      setup:\n        condition: service_completed_successfully\n", "", 1),
			want:     ErrNoHealthcheck,
			wantText: "service setup",
		},
		{
			name:     "anonymous volume",
			compose:  strings.Replace(goodCompose, "db-data:/var/lib/postgresql/data", "/var/lib/postgresql/data", 1),
			want:     ErrVolume,
			wantText: "anonymous volume",
		},
		{
			name:     "port on every interface",
			compose:  strings.Replace(goodCompose, `"127.0.0.1:8080:8080"`, `"8080:8080"`, 1),
			want:     ErrPublicPort,
			wantText: "bind it to 127.0.0.1",
		},
		{
			name:     "port on a public address",
			compose:  strings.Replace(goodCompose, `"127.0.0.1:8080:8080"`, `"0.0.0.0:8080:8080"`, 1),
			want:     ErrPublicPort,
			wantText: `"0.0.0.0"`,
		},
		{
			name:     "writable bind mount",
			compose:  strings.Replace(goodCompose, "init.sql:ro", "init.sql", 1),
			want:     ErrVolume,
			wantText: "is writable",
		},
		{
			name:       "Dockerfile base on latest",
			compose:    goodCompose,
			dockerfile: strings.Replace(goodDockerfile, "static-debian12:nonroot", "static-debian12", 1),
			want:       ErrUnpinnedImage,
			wantText:   "FROM gcr.io/distroless/static-debian12",
		},
		{
			name:       "Dockerfile runs as root",
			compose:    goodCompose,
			dockerfile: strings.Replace(goodDockerfile, "USER nonroot:nonroot", "USER root", 1),
			want:       ErrDockerfileUser,
		},
		{
			name:     "missing Dockerfile",
			compose:  strings.Replace(goodCompose, "app.Dockerfile", "nope.Dockerfile", 1),
			want:     ErrBuild,
			wantText: "nope.Dockerfile",
		},
		{
			name:    "not a compose file",
			compose: "services: [1, 2]\n",
			want:    ErrLoad,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			df := tt.dockerfile
			if df == "" {
				df = goodDockerfile
			}
			err := Check(context.Background(), writeProject(t, tt.compose, df), nil)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Check() = %v, want an error wrapping %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Check() = %q, want it to mention %q", err, tt.wantText)
			}
		})
	}
}

// TestRepositoryComposeFile checks the real deploy/compose/compose.yaml and Dockerfiles, and
// that it runs the whole path: the three services, the example edge service that answers
// lookups, and a second producer replica on request, each producer replica under a name of its
// own.
func TestRepositoryComposeFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join("..", "..", "compose", "compose.yaml")
	if err := Check(context.Background(), path, nil); err != nil {
		t.Fatalf("deploy/compose/compose.yaml: %v", err)
	}
	p, err := Load(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"core-publisher", "cache-producer", "cache-producer-2", "control-plane", "edge-service"} {
		s, ok := p.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		if s.Build == nil {
			t.Errorf("service %s: not built from deploy/docker", name)
		}
	}
	edge := p.Services["edge-service"]
	for _, v := range []string{"EDGE_REDIS_ADDR", "EDGE_PROJECTIONS", "EDGE_HTTP_ADDR"} {
		if val := edge.Environment[v]; val == nil || *val == "" {
			t.Errorf("edge-service: %s not set (the service needs it)", v)
		}
	}
	if _, ok := edge.DependsOn["redis-primary"]; !ok {
		t.Errorf("edge-service: does not wait for redis-primary")
	}
	names := map[string]string{}
	for _, svc := range []string{"cache-producer", "cache-producer-2"} {
		v := p.Services[svc].Environment["PRODUCER_REPLICA_NAME"]
		if v == nil || *v == "" {
			t.Errorf("%s: PRODUCER_REPLICA_NAME not set", svc)
			continue
		}
		if other, dup := names[*v]; dup {
			t.Errorf("%s and %s share PRODUCER_REPLICA_NAME %q", svc, other, *v)
		}
		names[*v] = svc
	}
	// The second replica takes the first's settings (a YAML merge of its environment), all but
	// its name.
	for k, v := range p.Services["cache-producer"].Environment {
		if got := p.Services["cache-producer-2"].Environment[k]; k != "PRODUCER_REPLICA_NAME" && (got == nil || v == nil || *got != *v) {
			t.Errorf("cache-producer-2: %s differs from cache-producer's", k)
		}
	}
	if got := p.Services["cache-producer-2"].Profiles; len(got) == 0 {
		t.Errorf("cache-producer-2 has no profile: it would start with every `up`")
	}
}

func TestCheckImageRef(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ref        string
		versionTag bool
		wantOK     bool
	}{
		{"redis:7.4.2-alpine", true, true},
		{"apache/kafka:4.1.0", true, true},
		{"localhost:5000/team/app:1.2", true, true},
		{"gcr.io/distroless/static-debian12:nonroot", false, true},
		{"gcr.io/distroless/static-debian12:nonroot", true, false},
		{"redis", false, false},
		{"redis:latest", false, false},
		{"localhost:5000/app", false, false},
		{"redis@sha256:" + strings.Repeat("0", 64), true, true},
		{"redis@sha256:abc", true, false},
		{"", false, false},
		{"redis:${TAG}", false, false},
	}
	for _, tt := range tests {
		err := CheckImageRef(tt.ref, tt.versionTag)
		if got := err == nil; got != tt.wantOK {
			t.Errorf("CheckImageRef(%q, %v) = %v, want ok=%v", tt.ref, tt.versionTag, err, tt.wantOK)
		}
		if err != nil && !errors.Is(err, ErrUnpinnedImage) {
			t.Errorf("CheckImageRef(%q) = %v, want it to wrap ErrUnpinnedImage", tt.ref, err)
		}
	}
}

func TestCheckDockerfile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want error
	}{
		{name: "good", src: goodDockerfile},
		{name: "continuation lines and flags", src: "FROM --platform=$BUILDPLATFORM golang:1.26.8 \\\n  AS b\nFROM b\nUSER 65532\n"},
		{name: "stage reference is not an image", src: "FROM alpine:3.22 AS base\nFROM base\nUSER app\n"},
		{name: "no USER", src: "FROM alpine:3.22\n", want: ErrDockerfileUser},
		{name: "USER 0", src: "FROM alpine:3.22\nUSER 0:0\n", want: ErrDockerfileUser},
		{name: "USER only in the build stage", src: "FROM alpine:3.22 AS b\nUSER app\nFROM alpine:3.22\n", want: ErrDockerfileUser},
		{name: "ARG without default", src: "ARG V\nFROM golang:${V}\nUSER app\n", want: ErrUnpinnedImage},
		{name: "no FROM", src: "USER app\n", want: ErrBuild},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckDockerfile(tt.src)
			if tt.want == nil && err != nil {
				t.Fatalf("CheckDockerfile() = %v, want nil", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("CheckDockerfile() = %v, want %q", err, tt.want)
			}
		})
	}
}

# distcache: every entry point. `make demo` runs the pipeline on the embedded local stack;
# `make test` runs every test against real components. Both do their own set-up.

SHELL := /bin/bash
GO ?= go
RUN := $(CURDIR)/.run
BIN := $(RUN)/bin
PREFIX := github.com/distcache/distcache
# MODULES: the modules of go.work, read from it (so a module added there is built, tested and
# linted without another list to keep).
MODULES := $(shell $(GO) work edit -json | sed -n 's/^[[:space:]]*"DiskPath": "\.\/\(.*\)"$$/\1/p')
PKGS := $(foreach m,$(MODULES),$(PREFIX)/$(m)/...)
TEST_TIMEOUT ?= 20m

.PHONY: all build tools setup up down status env migrate test fuzz lint openapi-lint modcheck archcheck demo bench bench-scale proto deploy-check clean help compose-up compose-down chaos screenshot

all: build

help:
	@echo "make demo    run the whole pipeline on the embedded local stack"
	@echo "make test    run every test (installs and starts what it needs)"
	@echo "make up | down | status | migrate | lint | modcheck | bench | bench-scale | chaos | fuzz | proto | deploy-check | compose-up | compose-down | screenshot"

## build: compile every module
build:
	$(GO) build $(PKGS)

## tools: the stack's own programs (devstack, kafkad) and Temporal's CLI, built from the Go module proxy
tools: $(BIN)/devstack $(BIN)/kafkad $(BIN)/temporal

$(BIN)/devstack: $(shell find tools/devstack tools/cmd/devstack -name '*.go') tools/go.mod
	@mkdir -p $(BIN)
	cd tools && $(GO) build -o $@ ./cmd/devstack

$(BIN)/kafkad: $(shell find tools/cmd/kafkad -name '*.go') tools/go.mod
	@mkdir -p $(BIN)
	cd tools && $(GO) build -o $@ ./cmd/kafkad

# Temporal's CLI lives in its own module (tools/temporal) outside go.work: see its go.mod.
$(BIN)/temporal: tools/temporal/go.mod tools/temporal/go.sum
	@mkdir -p $(BIN)
	@echo "building Temporal's CLI from the Go module proxy (a few minutes the first time)"
	cd tools/temporal && GOWORK=off $(GO) build -o $@ github.com/temporalio/cli/cmd/temporal

## setup: install PostgreSQL, Redis and Prometheus (server and promtool, for the dashboard and alert
## tests) when missing (apt-get as root on Debian) and build the tools
setup: tools
	$(BIN)/devstack install

up: setup
	$(BIN)/devstack -dir $(RUN) up

down:
	@if [ -x $(BIN)/devstack ]; then $(BIN)/devstack -dir $(RUN) down; else echo "nothing to stop: $(BIN)/devstack is not built"; fi

## status: every component of the local stack with its health, then, when the control-plane
## answers, `distcache status`: every projection's generations with their lag, the age of their
## newest change, their owner and dead letters (red or yellow rows need a look; see README)
CONTROL_HTTP ?= http://127.0.0.1:58091
status: $(BIN)/devstack $(BIN)/distcache
	$(BIN)/devstack -dir $(RUN) status
	@echo
	@DISTCACHE_TOKEN_FILE=$(RUN)/controlplane.token $(BIN)/distcache status -if-up -url $(CONTROL_HTTP) || [ $$? -eq 2 ]

$(BIN)/distcache: $(shell find services/control-plane/cmd/distcache services/control-plane/gen -name '*.go') services/control-plane/go.mod
	@mkdir -p $(BIN)
	cd services/control-plane && $(GO) build -o $@ ./cmd/distcache

env: $(BIN)/devstack
	@$(BIN)/devstack -dir $(RUN) env

## migrate: apply migrations/ to the stack's databases: the core set (outbox, capture trigger) to
## the core database, the control set (registry) to the control-plane's. The services only check
## them at start (make demo applies them too).
migrate: up
	set -a; source $(RUN)/stack.env; set +a; \
	cd migrations && $(GO) run ./cmd/migrate -database "$$DISTCACHE_CORE_DATABASE_URL" up core && \
	$(GO) run ./cmd/migrate -database "$$DISTCACHE_CONTROL_DATABASE_URL" up control

## test: the mechanical checks first (lint, modcheck, archcheck), then every test, against real components
## the tests start themselves
test: lint modcheck archcheck setup deploy-check
	$(MAKE) --no-print-directory fuzz FUZZTIME=5s
	$(GO) test -count=1 -race -timeout $(TEST_TIMEOUT) $(PREFIX)/libs/distcache/...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

## fuzz: a short run of every fuzz target (FUZZTIME each)
FUZZTIME ?= 30s
fuzz:
	@set -e; for m in $(MODULES); do \
	  for pkg in $$(cd $$m && $(GO) list ./...); do \
	    dir=$$(cd $$m && $(GO) list -f '{{.Dir}}' $$pkg); \
	    for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	      echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	      out=$$(mktemp); \
	      if ! $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg >$$out 2>&1; then \
	        echo "fuzz $$f failed; its output:"; tail -20 $$out; \
	        echo "replaying its corpus without fuzzing: a crasher it found is now in testdata/fuzz and fails here; a fuzz worker that missed the deadline on a loaded machine does not"; \
	        $(GO) test -count=1 -run "^$$f\$$" $$pkg || { rm -f $$out; exit 1; }; \
	      fi; rm -f $$out; \
	    done; \
	  done; \
	done

## lint: gofmt, go vet and staticcheck (pinned in tools/lint) over every module of go.work
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	cd tools/lint && GOWORK=off $(GO) build -o $(BIN)/staticcheck honnef.co/go/tools/cmd/staticcheck
	$(BIN)/staticcheck $(PKGS)
	@$(MAKE) --no-print-directory openapi-lint

## openapi-lint: the control-plane's OpenAPI document passes Redocly's recommended rules with no
## warning (Redocly's CLI from the npm registry, pinned, under $(RUN)/node; Node.js from Debian
## when missing)
REDOCLY_VERSION := 2.77.0
REDOCLY := $(RUN)/node/node_modules/.bin/redocly
OPENAPI_DOC := services/control-plane/gen/distcache/v1/controlplane.swagger.json
openapi-lint:
	@command -v npm >/dev/null || { echo "installing nodejs and npm (Debian)"; apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
	@if [ ! -x $(REDOCLY) ] || [ "$$(cat $(RUN)/node/.version 2>/dev/null)" != "$(REDOCLY_VERSION)" ]; then \
	  mkdir -p $(RUN)/node && npm install --prefix $(RUN)/node --no-audit --no-fund --silent @redocly/cli@$(REDOCLY_VERSION) && \
	  echo $(REDOCLY_VERSION) > $(RUN)/node/.version; fi
	@out=$$($(REDOCLY) lint --format=summary $(OPENAPI_DOC) 2>&1 | grep -v '[║╔╚]'); status=$$?; echo "$$out" | tail -6; \
	  if echo "$$out" | grep -q 'warning\|error'; then echo "openapi-lint: $(OPENAPI_DOC) has lint problems (run $(REDOCLY) lint $(OPENAPI_DOC))"; exit 1; fi

## archcheck: one proxy, one Eventually, one harness, one rule per contract, no retired names
## (the architecture rules of docs/architecture.md that a refactor could quietly undo)
archcheck:
	@bash .ci/archcheck

## modcheck: every module of go.work builds, vets and is tidy on its own (GOWORK=off), as another
## team's build sees it; a module that declares an older Go than go.work is also built and vetted
## with that Go's toolchain (from the Go module proxy). See .ci/modcheck.
modcheck:
	GO=$(GO) .ci/modcheck

## demo: the whole pipeline on the embedded local stack (see README): examples/demo drives it
## through the e2e/pipeline harness
demo:
	$(MAKE) --no-print-directory up
	$(GO) run ./examples/demo -run-dir $(RUN)

## screenshot: a running backfill's page in the Temporal UI (User Metadata: its current details),
## opened and photographed by a headless Chromium (installed with apt-get when missing, as setup
## installs PostgreSQL and Redis) -> docs/img/temporal-backfill.png; the test checks the page's text
SCREENSHOT ?= $(CURDIR)/docs/img/temporal-backfill.png
screenshot: setup
	$(BIN)/devstack install-chromium
	set -o pipefail; DISTCACHE_SCREENSHOT=$(SCREENSHOT) $(GO) test -count=1 -run '^TestTemporalUIShowsBackfill$$' -v $(PREFIX)/services/control-plane | grep -E '^(--- |ok|FAIL)|screenshot of'

## bench: one table of the pipeline and its parts -> bench/results/latest.md + latency.png,
## compared with e2e/baseline.json (BENCH_FLAGS=-quick for a short run, -strict to fail on a >20% regression)
BENCH_FLAGS ?=
bench: setup
	cd e2e && $(GO) run ./cmd/bench $(BENCH_FLAGS)

## bench-scale: the figures at 1M and 10M keys (not part of make test): edge heap, warm start from
## SCAN, producer fan-out and backfill, Redis memory per key, and 10/100/1,000 edges per Redis node,
## each with its peer -> bench/results/scale.md, compared with e2e/baseline-scale.json. About 40 min
## and 10-14 GiB peak on 24 GiB (a stage that does not fit is measured smaller and extrapolated);
## BENCH_FLAGS=-scale-keys 1000000 for 1M only (~6 min, ~3 GiB); -quick for a short try. See docs/capacity.md.
bench-scale: setup
	cd e2e && $(GO) run ./cmd/bench -scale $(BENCH_FLAGS)

## chaos: kill -9 and restart every component under load, then verify nothing was lost
## (CHAOS_FLAGS=-short: about 1.5 min; make test runs that short form as TestChaosShort)
CHAOS_FLAGS ?=
chaos: setup
	cd e2e && $(GO) run ./cmd/chaos $(CHAOS_FLAGS)

include services/control-plane/proto.mk

## proto: regenerate the control-plane's gRPC, grpc-gateway and OpenAPI code (needs protoc)
proto: controlplane-proto

deploy-check:
	@if [ -f deploy/check.mk ]; then $(MAKE) --no-print-directory -f deploy/check.mk; else echo "deploy-check: deploy/ has no manifests yet"; fi

include deploy/compose.mk

clean: down
	rm -rf $(RUN)

# deploy/check.mk: `make deploy-check` (the root Makefile runs `$(MAKE) -f deploy/check.mk`).
#
# Validates deploy/ with no Docker engine and no cluster:
#   - unit tests of the checkers (deploy/check) and of the image health probe;
#   - the compose file loads with compose-spec/compose-go and follows its rules
#     (healthchecks, pinned images, depends_on conditions, named volumes, Dockerfiles);
#   - helm lint --strict, and helm template with the default values, with every connection
#     option (Redis Sentinel, ACL users, TLS; Kafka mutual TLS and SASL) and with
#     values-production.yaml, the output decoded strictly into the Kubernetes API types and
#     checked for the chart's rules; values.schema.json must reject a misspelt value; the
#     NetworkPolicies are rendered by default and not with networkPolicy.enabled=false; the
#     migration hook Jobs are rendered per enabled set, each with its set's Secret, and the
#     control-plane never gets the core-publisher's database Secret; the search attribute Job
#     is rendered unless turned off, with the Temporal TLS and API key settings;
#   - the alert rules and dashboards: the chart's copies (files/) equal deploy/prometheus and
#     deploy/grafana; the PrometheusRule and the dashboard ConfigMaps render only when enabled;
#     promtool check rules when promtool is installed (make setup installs it);
#   - every PUBLISHER_/PRODUCER_/CONTROLPLANE_/EDGE_ variable that compose or the chart sets is
#     one the service's (or the example edge service's) code actually reads.
#
# helm and deploycheck are built from deploy/check (its own module, GOWORK=off) into
# .run/bin and rebuilt only when that module changes, so runs after the first take seconds.

SHELL := /bin/bash
GO ?= go
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
BIN := $(ROOT)/.run/bin
OUT := $(ROOT)/.run/deploy-check
CHECK_MOD := $(ROOT)/deploy/check
HELM := $(BIN)/helm
DEPLOYCHECK := $(BIN)/deploycheck
CHART := $(ROOT)/deploy/helm/distcache
PROD_VALUES := $(ROOT)/deploy/helm/values-production.yaml
COMPOSE_FILE := $(ROOT)/deploy/compose/compose.yaml
# The cluster version the chart is linted and rendered for (Capabilities.KubeVersion).
KUBE_VERSION ?= 1.33.0
# Values that switch on every connection option of the chart.
OPTIONS_VALUES := --set redis.mode=sentinel --set redis.sentinel.masterName=distcache \
  --set 'redis.sentinel.addrs={sentinel-0:26379,sentinel-1:26379}' --set redis.sentinel.username=watcher \
  --set redis.sentinel.password.existingSecret=redis-sentinel --set redis.username=distcache --set redis.tls=true \
  --set redis.password.existingSecret=redis --set redis.tlsSecret.existingSecret=redis-tls --set redis.tlsSecret.certKey=tls.crt \
  --set redis.tlsSecret.keyKey=tls.key --set kafka.tls.enabled=true --set kafka.tls.existingSecret=kafka-tls \
  --set kafka.tls.certKey=tls.crt --set kafka.tls.keyKey=tls.key --set kafka.sasl.mechanism=PLAIN \
  --set kafka.sasl.username=distcache --set kafka.sasl.password.existingSecret=kafka-user \
  --set temporal.tls.enabled=true --set temporal.tls.existingSecret=temporal-tls --set temporal.tls.caKey=ca.crt \
  --set temporal.tls.certKey=tls.crt --set temporal.tls.keyKey=tls.key \
  --set temporal.tls.serverName=distcache.a1b2c.tmprl.cloud --set temporal.apiKey.existingSecret=temporal-api-key \
  --set controlPlane.tls.existingSecret=control-plane-tls --set controlPlane.tls.clientCAKey=ca.crt

# compose-go and Kubernetes dependencies must never touch the workspace's graph.
export GOWORK := off
# Keep helm's cache and config out of $HOME.
export HELM_CACHE_HOME := $(OUT)/helm/cache
export HELM_CONFIG_HOME := $(OUT)/helm/config
export HELM_DATA_HOME := $(OUT)/helm/data

.PHONY: deploy-check unit-check compose-check helm-check
.DEFAULT_GOAL := deploy-check

deploy-check: unit-check compose-check helm-check
	@echo "deploy-check: ok"

# The ldflags are the ones helm's own Makefile sets: its version, and the Kubernetes version
# it assumes by default (the minor of the client-go it links).
$(HELM): $(CHECK_MOD)/go.mod $(CHECK_MOD)/go.sum
	@mkdir -p $(BIN)
	@echo "building helm from the Go module proxy (a few minutes the first time)"
	cd $(CHECK_MOD) && \
	  hv=$$($(GO) list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	  kminor=$$($(GO) list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2) && \
	  $(GO) build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$$hv \
	    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$kminor \
	    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$kminor" \
	    -o $@ helm.sh/helm/v3/cmd/helm

$(DEPLOYCHECK): $(CHECK_MOD)/go.mod $(CHECK_MOD)/go.sum $(shell find $(CHECK_MOD) -name '*.go' ! -name '*_test.go')
	@mkdir -p $(BIN)
	cd $(CHECK_MOD) && $(GO) build -o $@ .

unit-check:
	cd $(CHECK_MOD) && $(GO) vet ./... && $(GO) test ./...
	cd $(ROOT)/deploy/healthprobe && $(GO) vet ./... && $(GO) test ./...

compose-check: $(DEPLOYCHECK)
	$(DEPLOYCHECK) compose $(COMPOSE_FILE)

helm-check: $(HELM) $(DEPLOYCHECK)
	@mkdir -p $(OUT)
	$(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART)
	$(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART) -f $(PROD_VALUES)
	$(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --namespace distcache > $(OUT)/default.yaml
	$(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --namespace distcache -f $(PROD_VALUES) > $(OUT)/production.yaml
	@# Every connection option the chart can set (Redis Sentinel with ACL users and TLS, Kafka
	@# mutual TLS and SASL), so that the env check below sees each variable name.
	$(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --namespace distcache $(OPTIONS_VALUES) > $(OUT)/options.yaml
	$(DEPLOYCHECK) manifests $(OUT)/default.yaml $(OUT)/production.yaml $(OUT)/options.yaml
	@# The ServiceMonitor toggle: absent by default, present when enabled.
	@if grep -q '^kind: ServiceMonitor' $(OUT)/default.yaml; then echo "FAIL: ServiceMonitor rendered although disabled"; exit 1; fi
	@grep -q '^kind: ServiceMonitor' $(OUT)/production.yaml || { echo "FAIL: ServiceMonitor missing although enabled"; exit 1; }
	@# Alerts and dashboards: one source each (deploy/prometheus, deploy/grafana), copied into the
	@# chart (it cannot read outside itself); rendered only when enabled.
	@diff -r $(ROOT)/deploy/prometheus $(CHART)/files/prometheus && diff -r $(ROOT)/deploy/grafana $(CHART)/files/grafana || \
	  { echo "FAIL: the chart's files/ differ from deploy/prometheus or deploy/grafana (edit those, then cp deploy/prometheus/* $(CHART)/files/prometheus/ and cp deploy/grafana/* $(CHART)/files/grafana/)"; exit 1; }
	@if command -v promtool >/dev/null; then promtool check rules $(ROOT)/deploy/prometheus/distcache-rules.yaml >/dev/null || exit 1; \
	  else echo "note: promtool not installed (make setup installs it); rules not checked by promtool"; fi
	@if grep -q '^kind: PrometheusRule\|grafana_dashboard:' $(OUT)/default.yaml; then echo "FAIL: PrometheusRule or dashboards rendered although disabled"; exit 1; fi
	@grep -q '^kind: PrometheusRule' $(OUT)/production.yaml || { echo "FAIL: PrometheusRule missing although enabled"; exit 1; }
	@test "$$(grep -c 'grafana_dashboard: "1"' $(OUT)/production.yaml)" = "$$(ls $(CHART)/files/grafana/*.json | wc -l)" || \
	  { echo "FAIL: want one dashboard ConfigMap per files/grafana/*.json when enabled"; exit 1; }
	@# NetworkPolicies: on by default (a default deny, one per service, one for the migration
	@# Jobs, one for the search attribute Job), off on request.
	@test "$$(grep -c '^kind: NetworkPolicy' $(OUT)/default.yaml)" = 6 || { echo "FAIL: want 6 NetworkPolicies with the defaults"; exit 1; }
	@# Migrations: a pre-install,pre-upgrade hook Job per set, none when both are disabled; the
	@# search attribute Job a post-install,post-upgrade hook, none without temporal.searchAttributes.create.
	@test "$$(grep -c '^kind: Job' $(OUT)/default.yaml)" = 3 || { echo "FAIL: want 2 migration Jobs and the search attribute Job with the defaults"; exit 1; }
	@test "$$(grep -c 'helm.sh/hook: post-install,post-upgrade' $(OUT)/default.yaml)" = 2 || { echo "FAIL: want the search attribute Job and its NetworkPolicy as post-install,post-upgrade hooks"; exit 1; }
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set temporal.searchAttributes.create=false \
	  | grep -q 'search-attributes'; then echo "FAIL: the search attribute Job rendered although temporal.searchAttributes.create=false"; exit 1; fi
	@grep -q 'name: DISTCACHE_TEMPORAL_API_KEY' $(OUT)/options.yaml && grep -q 'name: DISTCACHE_TEMPORAL_TLS_CERT_FILE' $(OUT)/options.yaml || \
	  { echo "FAIL: the search attribute Job does not take the Temporal TLS and API key settings"; exit 1; }
	@test "$$(grep -c 'helm.sh/hook: pre-install,pre-upgrade' $(OUT)/default.yaml)" = 3 || { echo "FAIL: want the 2 migration Jobs and their NetworkPolicy as pre-install,pre-upgrade hooks"; exit 1; }
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set migrations.core.enabled=false \
	  --set migrations.control.enabled=false --set temporal.searchAttributes.create=false | grep -q '^kind: Job\|-migrations$$'; then \
	  echo "FAIL: migration Jobs or their NetworkPolicy rendered although both sets are disabled"; exit 1; fi
	@# Least privilege: each Job takes its set's Secret (its own when given); the control-plane
	@# never gets the core-publisher's core database Secret, and has none without coreDatabase.
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set postgres.core.existingSecret=publisher-rw \
	  --show-only templates/control-plane.yaml | grep -q '"publisher-rw"'; then \
	  echo "FAIL: the control-plane gets the core-publisher's database Secret"; exit 1; fi
	@$(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set postgres.core.existingSecret=publisher-rw \
	  --set migrations.core.database.existingSecret=core-owner --show-only templates/migrations.yaml > $(OUT)/migrations.yaml
	@grep -q '"core-owner"' $(OUT)/migrations.yaml && grep -q '"distcache-registry-database"' $(OUT)/migrations.yaml && \
	  ! grep -q '"publisher-rw"' $(OUT)/migrations.yaml || { echo "FAIL: the migration Jobs do not use their sets' Secrets"; exit 1; }
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set controlPlane.coreDatabase.existingSecret= >/dev/null 2>&1; then \
	  echo "FAIL: the chart rendered modelsFromCoreDatabase without controlPlane.coreDatabase"; exit 1; fi
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set networkPolicy.enabled=false | grep -q '^kind: NetworkPolicy'; then \
	  echo "FAIL: NetworkPolicy rendered although networkPolicy.enabled=false"; exit 1; fi
	@# The values schema must catch a typo and a missing secret reference.
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set corePublisher.replica=3 >/dev/null 2>&1; then \
	  echo "FAIL: values.schema.json accepted the unknown value corePublisher.replica"; exit 1; fi
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set postgres.core.existingSecret= >/dev/null 2>&1; then \
	  echo "FAIL: the chart rendered without the core database secret"; exit 1; fi
	@# A Temporal API key without TLS would travel in clear text: the chart refuses it.
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set temporal.apiKey.existingSecret=k >/dev/null 2>&1; then \
	  echo "FAIL: the chart rendered a Temporal API key without TLS"; exit 1; fi
	@# Control-plane TLS: its probes switch to HTTPS.
	@grep -q 'scheme: HTTPS' $(OUT)/options.yaml || { echo "FAIL: control-plane TLS without HTTPS probes"; exit 1; }
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set kafka.sasl.mechanism=PLAIN \
	  --set kafka.sasl.username=u --set kafka.sasl.password.existingSecret=s >/dev/null 2>&1; then \
	  echo "FAIL: the chart rendered SASL PLAIN without TLS and without kafka.sasl.allowPlaintext"; exit 1; fi
	@# cache-producer replicas: two by default, sharing the topics through a consumer group, each
	@# named by its pod; a PodDisruptionBudget keeping one; the grace period above the shutdown
	@# timeout; the schema no longer caps the replicas.
	@$(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --show-only templates/cache-producer.yaml > $(OUT)/producer.yaml
	@grep -q '^  replicas: 2$$' $(OUT)/producer.yaml || { echo "FAIL: want 2 cache-producer replicas by default"; exit 1; }
	@grep -A3 'name: PRODUCER_REPLICA_NAME' $(OUT)/producer.yaml | grep -q 'fieldPath: metadata.name' || \
	  { echo "FAIL: PRODUCER_REPLICA_NAME is not the pod's name (fieldRef metadata.name)"; exit 1; }
	@grep -A1 'name: PRODUCER_GROUP_ID' $(OUT)/producer.yaml | grep -q '"distcache-cache-producer"' || \
	  { echo "FAIL: PRODUCER_GROUP_ID is not distcache-cache-producer for a release named distcache"; exit 1; }
	@awk '/^kind: PodDisruptionBudget/{p=1} p&&/minAvailable: 1$$/{f=1} END{exit !f}' $(OUT)/producer.yaml || \
	  { echo "FAIL: no cache-producer PodDisruptionBudget with minAvailable 1"; exit 1; }
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set cacheProducer.pdb.enabled=false \
	  --show-only templates/cache-producer.yaml | grep -q '^kind: PodDisruptionBudget'; then \
	  echo "FAIL: cache-producer PodDisruptionBudget rendered although cacheProducer.pdb.enabled=false"; exit 1; fi
	@grep -q 'podAntiAffinity' $(OUT)/producer.yaml || { echo "FAIL: cache-producer pods not spread over nodes by default"; exit 1; }
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set cacheProducer.spreadAcrossNodes=false \
	  --show-only templates/cache-producer.yaml | grep -q 'podAntiAffinity'; then \
	  echo "FAIL: cache-producer anti-affinity rendered although cacheProducer.spreadAcrossNodes=false"; exit 1; fi
	@$(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set cacheProducer.replicas=5 >/dev/null || \
	  { echo "FAIL: values.schema.json refused cacheProducer.replicas=5"; exit 1; }
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set cacheProducer.shutdownTimeout=1m \
	  --set cacheProducer.terminationGracePeriodSeconds=45 >/dev/null 2>&1; then \
	  echo "FAIL: the chart rendered a grace period (45 s) below the producer's shutdown timeout (1m)"; exit 1; fi
	@if $(HELM) template distcache $(CHART) --kube-version $(KUBE_VERSION) --set cacheProducer.group.heartbeatInterval=10s >/dev/null 2>&1; then \
	  echo "FAIL: the chart rendered a group heartbeat interval not below the session timeout"; exit 1; fi
	@echo "ok   helm: lint, template (default, production, every connection option), NetworkPolicy toggle, migration Jobs and their Secrets, search attribute Job, producer replicas (group, names, PDB, grace, spread), schema rejects bad values"
	$(DEPLOYCHECK) env $(ROOT)/services $(COMPOSE_FILE) $(OUT)/default.yaml $(OUT)/production.yaml $(OUT)/options.yaml

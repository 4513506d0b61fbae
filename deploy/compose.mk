# deploy/compose.mk: the Docker entry points, included from the root Makefile.
#
#   make compose-up     build the three services' images and start the whole stack, waiting
#                       until every service is healthy (one-shot jobs: completed)
#   make compose-down   stop it (volumes are kept; `docker compose ... down -v` drops them)
#
# COMPOSE may name another client, e.g. COMPOSE="podman compose".

COMPOSE ?= docker compose
DEPLOY_COMPOSE_FILE := $(dir $(lastword $(MAKEFILE_LIST)))compose/compose.yaml

.PHONY: compose-up compose-down compose-logs

compose-up:
	$(COMPOSE) -f $(DEPLOY_COMPOSE_FILE) up -d --wait --build

compose-down:
	$(COMPOSE) -f $(DEPLOY_COMPOSE_FILE) down

compose-logs:
	$(COMPOSE) -f $(DEPLOY_COMPOSE_FILE) logs -f --tail=100

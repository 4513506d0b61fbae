#!/bin/sh
# One-shot job of deploy/compose (temporalio/admin-tools): creates Temporal's two PostgreSQL
# databases if missing and brings their schemas to the version the server image expects.
# Idempotent, so it runs on every `compose up`.
set -eu
: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
port="${DB_PORT:-5432}"
schema=/etc/temporal/schema/postgresql/v12

for db in temporal temporal_visibility; do
  case "$db" in
    temporal) dir="$schema/temporal/versioned" ;;
    *)        dir="$schema/visibility/versioned" ;;
  esac
  tool() { temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" --db "$db" "$@"; }
  tool create || echo "database $db exists"
  # setup-schema -v 0.0 only creates the version table; it is a no-op when it exists.
  tool setup-schema -v 0.0
  tool update-schema -d "$dir"
done
echo "temporal schemas up to date"

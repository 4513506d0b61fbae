#!/bin/sh
# One-shot job of deploy/compose (temporalio/admin-tools): registers the namespace the
# control-plane uses and distcache's search attributes, once the server answers its health check.
# Idempotent.
set -eu
ns="${NAMESPACE:-default}"
addr="${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS is required}"
tries=0
until temporal operator cluster health --address "$addr" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then echo "temporal at $addr is not healthy after 60 tries" >&2; exit 1; fi
  sleep 2
done
if temporal operator namespace describe --address "$addr" -n "$ns" >/dev/null 2>&1; then
  echo "namespace $ns exists"
else
  temporal operator namespace create --address "$addr" -n "$ns" --retention 72h
  echo "namespace $ns created"
fi
# distcache's search attributes (workflows.SearchAttributes), so the UI filters builds by projection,
# generation and phase. Creating one that exists with the same type changes nothing; a namespace
# just created may take a moment to accept them (the job is restarted on failure).
for sa in DistcacheProjection=Keyword DistcacheGeneration=Int DistcachePhase=Keyword; do
  temporal operator search-attribute create --address "$addr" -n "$ns" --name "${sa%%=*}" --type "${sa#*=}"
done

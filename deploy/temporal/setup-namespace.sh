#!/bin/sh
# The namespace the orders run in and the custom search attributes operators filter them by
# in the Temporal UI (workflows/search_attributes.py), created with the `temporal` CLI of
# temporalio/admin-tools once the server answers. Safe to run again: an existing namespace
# is kept, and registering an attribute that exists with the same type succeeds.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:?host:port of the Temporal frontend}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-7d}"
WAIT_SECONDS="${TEMPORAL_WAIT_SECONDS:-180}"

# Run a command until it succeeds, for about WAIT_SECONDS: the server takes a while to come
# up, and a new namespace a few seconds to be known to every service.
retry() {
    waited=0
    until "$@"; do
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            echo "Temporal setup: gave up after ${waited} s: $*" >&2
            return 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
}

echo "Temporal setup: waiting for the server at $ADDRESS"
retry temporal operator cluster health --address "$ADDRESS" >/dev/null

if temporal operator namespace describe --namespace "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1; then
    echo "Temporal setup: namespace $NAMESPACE exists"
else
    echo "Temporal setup: creating namespace $NAMESPACE (retention $RETENTION)"
    retry temporal operator namespace create --namespace "$NAMESPACE" \
        --retention "$RETENTION" --address "$ADDRESS"
fi

# One attribute per call: given several --name with one --type, CLI 1.9 registers only the
# first (seen against the dev server).
for attribute in OrderStatus:Keyword CustomerNumber:Keyword OrderTotal:Double; do
    name="${attribute%%:*}"
    type="${attribute#*:}"
    echo "Temporal setup: search attribute $name ($type)"
    retry temporal operator search-attribute create --namespace "$NAMESPACE" \
        --address "$ADDRESS" --name "$name" --type "$type"
done
echo "Temporal setup: done"

#!/usr/bin/env bash
# Static checks of the container deployment files, for `make test`:
#   1. the Dockerfile's build stage runs `make build` (so the image holds the
#      same binary as `make build`) and the final stage runs it as non-root;
#   2. compose.yaml is valid: `docker-compose -f compose.yaml config -q`
#      (skipped, with a message, only when docker-compose is not installed;
#      install it with `apt-get install -y docker-compose`).
# With --ready [SECONDS] it instead waits until the running compose stack
# answers on its readiness endpoints (used by `make up`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { echo "compose-check: $*" >&2; exit 1; }

if [ "${1:-}" = "--ready" ]; then
	deadline=$((SECONDS + ${2:-180}))
	for url in \
		"http://127.0.0.1:${STEPFLOW_FUNCTION_PORT:-8080}/health/readiness" \
		"http://127.0.0.1:${STEPFLOW_BRIDGE_PORT:-9091}/health/readiness" \
		"http://127.0.0.1:${STEPFLOW_RECONCILER_PORT:-9092}/health/readiness" \
		"http://127.0.0.1:${STEPFLOW_API_PORT:-8088}/health/readiness"; do
		until curl -fsS -o /dev/null "$url" 2>/dev/null; do
			if ((SECONDS >= deadline)); then
				fail "$url not ready; see: docker compose ps; docker compose logs"
			fi
			sleep 1
		done
		echo "ready: $url"
	done
	exit 0
fi

# 1. Dockerfile: the build stage (FROM golang... AS build up to the next FROM)
#    runs the Makefile's build target; the final stage is non-root.
[ -f Dockerfile ] || fail "no Dockerfile"
build_stage=$(awk '/^FROM /{n++} n==1' Dockerfile)
grep -Eq '^FROM golang:[0-9.]+ AS build' <<<"$build_stage" ||
	fail "Dockerfile: the first stage is not 'FROM golang:<version> AS build'"
grep -Eq '^RUN make build( |$)' <<<"$build_stage" ||
	fail "Dockerfile: the build stage does not 'RUN make build' (the image must hold the binary make build makes)"
grep -Eq '^build:' Makefile ||
	fail "Makefile: no build target for the Dockerfile to run"
grep -Eq -- '--from=build /src/bin/stepflow ' Dockerfile ||
	fail "Dockerfile: the final stage does not copy bin/stepflow (make build's output) from the build stage"
final_stage=$(awk '/^FROM /{n++} n>=2' Dockerfile)
grep -Eq '^USER [0-9]+' <<<"$final_stage" ||
	fail "Dockerfile: the final stage has no numeric non-root USER"
grep -Eq '^USER 0([: ]|$)' <<<"$final_stage" && fail "Dockerfile: the final stage runs as root"
echo "compose-check: Dockerfile builds with 'make build' and runs as non-root: ok"

# 2. compose.yaml, as docker-compose 1.29 (and so docker compose v2) reads it.
if ! command -v docker-compose >/dev/null 2>&1; then
	echo "compose-check: SKIP compose.yaml validation: docker-compose is not installed (apt-get install -y docker-compose)"
	exit 0
fi
# Interpolation and the cli profile included, so every service is checked.
docker-compose -f compose.yaml --profile cli config -q ||
	fail "compose.yaml is not valid (docker-compose -f compose.yaml config)"
echo "compose-check: compose.yaml is valid ($(docker-compose version --short 2>/dev/null || echo docker-compose)): ok"

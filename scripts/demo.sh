#!/usr/bin/env bash
# make demo: a real workflow on the real stack. Migrates, starts the step
# function, the bridge and the reconciler as separate processes, runs
# examples/order.json (fan-out, a conditional branch, a retry, a join), prints
# the run's steps and output, and stops the processes cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/stepflow}
export POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/}
export STEPFLOW_QUEUE=${STEPFLOW_QUEUE:-stepflow-demo}
FN_ADDR=${DEMO_FUNCTION_ADDRESS:-127.0.0.1:18080}
BRIDGE_ADDR=${DEMO_BRIDGE_ADDRESS:-127.0.0.1:19091}
REC_ADDR=${DEMO_RECONCILER_ADDRESS:-127.0.0.1:19092}
LOGS=$(mktemp -d -t stepflow-demo.XXXXXX)
pids=()

stop() {
  local code=$?
  if ((${#pids[@]})); then
    echo "==> stopping function, bridge and reconciler (SIGTERM)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ "$code" -ne 0 ]; then
    echo "demo failed (exit $code); process logs in $LOGS:" >&2
    tail -n 20 "$LOGS"/*.log >&2 || true
  else
    rm -rf "$LOGS"
  fi
  exit "$code"
}
trap stop EXIT

wait_ready() { # name url
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not become ready at $2 within 15 s" >&2
  return 1
}

t0=$(date +%s%N)
echo "==> migrate"
"$BIN" migrate
echo "==> start function ($FN_ADDR), bridge ($BRIDGE_ADDR), reconciler ($REC_ADDR)"
"$BIN" function --listen-address "$FN_ADDR" >"$LOGS/function.log" 2>&1 & pids+=($!)
"$BIN" bridge --function-url "http://$FN_ADDR/" --http-address "$BRIDGE_ADDR" >"$LOGS/bridge.log" 2>&1 & pids+=($!)
"$BIN" reconciler --schedule "@every 5s" --threshold 30s --http-address "$REC_ADDR" >"$LOGS/reconciler.log" 2>&1 & pids+=($!)
wait_ready function "http://$FN_ADDR/health/readiness"
wait_ready bridge "http://$BRIDGE_ADDR/health/readiness"
wait_ready reconciler "http://$REC_ADDR/health/readiness"
echo "    ready after $(( ($(date +%s%N) - t0) / 1000000 )) ms"

run="demo-$(date +%s)-$$"
echo "==> stepflow start examples/order.json --input @examples/order.input.json --wait   (run $run)"
t1=$(date +%s%N)
"$BIN" start examples/order.json --input @examples/order.input.json --run-id "$run" --wait --timeout 60s >"$LOGS/result.json"
echo "    finished in $(( ($(date +%s%N) - t1) / 1000000 )) ms end to end"
echo
"$BIN" status "$run"

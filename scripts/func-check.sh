#!/usr/bin/env bash
# func-check: prove the repository root is a working Knative function with the
# real func CLI (knative.dev/func v0.50.1) and its host builder, as a newcomer
# types them (no GOFLAGS), and that the function it builds is the step function
# `stepflow function` serves:
#
#   1. build the func CLI once into ~/.cache/stepflow/func-<version>/func (outside the repository, which
#      the host builder copies into the image; from the Go module cache,
#      downloading knative.dev/func@v0.50.1 through the module proxy if needed);
#   2. func build --builder=host   (OCI image under .func/build, nothing pushed),
#      with no -mod flag in GOFLAGS, then check that func chose the instanced-http
#      scaffolding and that the binary it built links exactly our go.mod's versions;
#   3. func run --builder=host     (background; POSTGRES_URL / REDIS_URL; no -mod flag);
#   4. wait, bounded, for GET /health/readiness;
#   5. func invoke -f cloudevent a dev.stepflow.job.v1 CloudEvent (binary mode)
#      carrying {"runId","blueprintId","nodeId","attempt":1} built from RUN_ID,
#      BLUEPRINT_ID and NODE_ID (the caller prepares that run beforehand), and
#      assert a dev.stepflow.jobs.v1 reply; then func invoke in func.yaml's own
#      format (invoke: http) with the same job as a structured-mode CloudEvent
#      (a redelivery), which fails on any status above 299;
#   6. go test -tags funccheck -run TestFuncRunBehindBridge . (funccheck_test.go):
#      a bridge (bin/stepflow bridge) in front of func run, 120 fan-out runs at
#      bridge concurrency 8 with batches, 24 concurrent requests, /metrics of
#      both, stepflow_bridge_batches_refused 0; then `go run ./bench --quick
#      --function func` (the benchmark's func route, with a func run of its own);
#   7. always stop the function (trap).
#
# Environment:
#   RUN_ID, BLUEPRINT_ID, NODE_ID   the job to send (default: a new run of
#                                   examples/order.json, job for node validate)
#   POSTGRES_URL, REDIS_URL         passed to the function (defaults: local test services)
#   RABBITMQ_URL                    for step 6's bridge (default: the local broker)
#   FUNC_ADDRESS                    host:port for func run (default: func picks
#                                   127.0.0.1:8080, or a free port if 8080 is taken)
#   FUNC_BIN                        func CLI to use/build (default ~/.cache/stepflow/func-<version>/func)
#   FUNC_VERSION                    func version to build (default v0.50.1, the one go.mod
#                                   is pinned for: docs/knative.md)
#   FUNC_CHECK_SKIP_BUILD=1         skip step 2 (func run scaffolds and compiles by itself)
#   FUNC_CHECK_SKIP_BENCH=1         skip the quick benchmark of step 6
#   READY_TIMEOUT                   seconds to wait for the running function (default 300:
#                                   func run compiles before it serves)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

FUNC_VERSION=${FUNC_VERSION:-v0.50.1}
FUNC_BIN=${FUNC_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/stepflow/func-$FUNC_VERSION/func}
READY_TIMEOUT=${READY_TIMEOUT:-300}
export POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}

JOB_TYPE=dev.stepflow.job.v1
REPLY_TYPE=dev.stepflow.jobs.v1

now_ms() { date +%s%3N; }
since() { # since START_MS -> "12.345s"
	local ms=$(($(now_ms) - $1))
	printf '%d.%03ds' $((ms / 1000)) $((ms % 1000))
}
log() { printf '==> %s\n' "$*"; }
die() {
	printf 'func-check: %s\n' "$*" >&2
	exit 1
}
json_str() { # minimal JSON string escaping for ids
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

for tool in go curl; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is required on PATH"
done
# bin/stepflow: step 6's bridge, and the run of step 5. The default tables are
# the function's (func run passes only POSTGRES_URL and REDIS_URL).
make -s build
bin/stepflow migrate >/dev/null
if [ -z "${RUN_ID:-}" ]; then
	# Prepare a run of examples/order.json whose start job waits on a queue
	# no bridge consumes, then send that job to the function ourselves.
	export STEPFLOW_QUEUE=${STEPFLOW_QUEUE:-stepflow-func-check}
	log "preparing a run of examples/order.json (queue $STEPFLOW_QUEUE)"
	RUN_ID=$(bin/stepflow start examples/order.json --input @examples/order.input.json --run-id "func-check-$(date +%s)-$$")
	BLUEPRINT_ID=order
	NODE_ID=validate
	cleanup_run() {
		bin/stepflow cancel "$RUN_ID" >/dev/null 2>&1 || true
		command -v rabbitmqctl >/dev/null 2>&1 && rabbitmqctl -q purge_queue "$STEPFLOW_QUEUE" >/dev/null 2>&1 || true
	}
	trap cleanup_run EXIT
fi
: "${BLUEPRINT_ID:?set BLUEPRINT_ID}"
: "${NODE_ID:?set NODE_ID}"
# Step 6's test is built only with -tags funccheck: vet it first, so that a
# change elsewhere that breaks it shows before the long steps.
go vet -tags funccheck .

T0=$(now_ms)

# --- 1. the func CLI ---------------------------------------------------------------------
build_func_cli() {
	local t modcache src work
	t=$(now_ms)
	modcache=$(go env GOMODCACHE)
	src="$modcache/knative.dev/func@$FUNC_VERSION"
	if [ ! -f "$src/go.mod" ]; then
		log "downloading knative.dev/func@$FUNC_VERSION into the module cache"
		# Outside any module, by exact version (the proxy's version list may omit it,
		# so `go install ...@version` can be refused).
		(cd / && GO111MODULE=on go mod download knative.dev/func@"$FUNC_VERSION")
	fi
	[ -f "$src/go.mod" ] || die "knative.dev/func@$FUNC_VERSION not found in $modcache"
	work=$(mktemp -d -t func-src.XXXXXX)
	log "copying $src to $work (the module cache is read-only)"
	cp -r "$src/." "$work/"
	chmod -R u+w "$work"
	mkdir -p "$(dirname "$FUNC_BIN")"
	substitute_unserved_requirements "$work"
	log "building func $FUNC_VERSION into $FUNC_BIN (a cold build takes about 10-15 minutes on 2 cores)"
	(cd "$work" && GOFLAGS="$(go env GOFLAGS) -mod=mod" go build -ldflags "-X knative.dev/func/pkg/version.Vers=$FUNC_VERSION" -o "$FUNC_BIN.tmp" ./cmd/func)
	mv "$FUNC_BIN.tmp" "$FUNC_BIN"
	rm -rf "$work"
	log "func CLI built in $(since "$t"): $("$FUNC_BIN" version)"
}
# substitute_unserved_requirements DIR: func v0.50.1 requires two modules that a Go
# module proxy may not serve (proxy.golang.org answered 403 "not available" for both on
# the machine this was written on): github.com/functions-dev/func-operator v0.2.1,
# whose API types only func deploy's syncer for the func operator uses, and a
# pseudo-version of github.com/awslabs/amazon-ecr-credential-helper/ecr-login (AWS ECR
# credentials, for pushing). When a download fails, the copy of func's source in DIR
# gets a stand-in through a replace in its go.mod (never in ours): ecr-login v0.13.0,
# and a module with the func-operator API types func uses. Neither is on the path of
# func build, func run or func invoke with the host builder.
substitute_unserved_requirements() {
	local dir=$1 v
	local ecr=github.com/awslabs/amazon-ecr-credential-helper/ecr-login op=github.com/functions-dev/func-operator
	v=$(awk -v m="$ecr" '$1 == m {print $2; exit}' "$dir/go.mod")
	if [ -n "$v" ] && ! (cd "$dir" && go mod download "$ecr@$v" >/dev/null 2>&1); then
		log "the module proxy does not serve $ecr@$v: building func with $ecr@v0.13.0"
		(cd "$dir" && go mod edit -replace "$ecr=$ecr@v0.13.0")
	fi
	v=$(awk -v m="$op" '$1 == m {print $2; exit}' "$dir/go.mod")
	if [ -n "$v" ] && ! (cd "$dir" && go mod download "$op@$v" >/dev/null 2>&1); then
		log "the module proxy does not serve $op@$v: building func with a stand-in of its api/v1alpha1 (used by func deploy's operator sync only)"
		mkdir -p "$dir/.func-operator/api/v1alpha1"
		printf 'module %s\n\ngo 1.25\n' "$op" >"$dir/.func-operator/go.mod"
		cat >"$dir/.func-operator/api/v1alpha1/types.go" <<'GO'
// Package v1alpha1 declares the func operator's Function resource as far as
// func's operator syncer (func deploy) uses it.
package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	GroupVersion  = schema.GroupVersion{Group: "functions.dev", Version: "v1alpha1"}
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &Function{}, &FunctionList{})
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})
	AddToScheme = SchemeBuilder.AddToScheme
)

type FunctionSpecRepository struct {
	URL    string `json:"url"`
	Branch string `json:"branch,omitempty"`
	Path   string `json:"path,omitempty"`
}

type FunctionSpecRegistry struct {
	AuthSecretRef *corev1.LocalObjectReference `json:"authSecretRef,omitempty"`
}

type FunctionSpec struct {
	Repository FunctionSpecRepository `json:"repository"`
	Registry   FunctionSpecRegistry   `json:"registry,omitempty"`
}

type FunctionStatus struct {
	Name string `json:"name,omitempty"`
}

type Function struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              FunctionSpec   `json:"spec,omitempty"`
	Status            FunctionStatus `json:"status,omitempty"`
}

type FunctionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Function `json:"items"`
}

func (in *Function) DeepCopyObject() runtime.Object {
	out := *in
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if in.Spec.Registry.AuthSecretRef != nil {
		ref := *in.Spec.Registry.AuthSecretRef
		out.Spec.Registry.AuthSecretRef = &ref
	}
	return &out
}

func (in *FunctionList) DeepCopyObject() runtime.Object {
	out := *in
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]Function, len(in.Items))
	for i := range in.Items {
		out.Items[i] = *in.Items[i].DeepCopyObject().(*Function)
	}
	return &out
}
GO
		(cd "$dir" && go mod edit -replace "$op=./.func-operator")
	fi
}

if [ -x "$FUNC_BIN" ]; then
	log "using $FUNC_BIN ($("$FUNC_BIN" version))"
else
	build_func_cli
fi

# func build --builder=host runs a bare `go build` (-mod=readonly) in the scaffolding
# it writes to .func/build, whose go.mod is func's template with our requirements added
# only where the template lists none; func run runs `go mod tidy` there first. Our go.mod
# is pinned so that the template's go.mod needs no update (docs/knative.md, "func build
# and go.mod"). To prove the plain commands, run them without any -mod flag, keeping the
# rest of the user's GOFLAGS (e.g. -buildvcs=false from `go env -w`).
PLAIN_GOFLAGS=
for flag in $(go env GOFLAGS); do
	case $flag in
	-mod=*) log "func build and func run without $flag (the plain commands)" ;;
	*) PLAIN_GOFLAGS="$PLAIN_GOFLAGS $flag" ;;
	esac
done
export GOFLAGS="${PLAIN_GOFLAGS# }"

# --- 2. func build -------------------------------------------------------------------------
if [ "${FUNC_CHECK_SKIP_BUILD:-}" = 1 ]; then
	log "skipping func build (FUNC_CHECK_SKIP_BUILD=1)"
else
	t=$(now_ms)
	log "func build --builder=host (linux/amd64, linux/arm64, linux/arm/v7; nothing is pushed)"
	"$FUNC_BIN" build --builder=host --path "$ROOT"
	grep -q 'http.Start(f.New())' .func/build/main.go ||
		die "func did not scaffold the instanced-http main (.func/build/main.go: $(tr '\n' ' ' <.func/build/main.go))"
	# The binary func built links the module versions `go build` of this repository
	# does (a scaffolding pin above ours would show here).
	# (Our own module shows as the scaffolding's v0.0.0 requirement, replaced by ./f.)
	built=$(go version -m .func/build/result/f.linux.amd64 | awk '$1 == "dep" && $2 != "github.com/stepflow/stepflow" {print $2, $3}' | sort)
	ours=$(go list -m -f '{{.Path}} {{.Version}}' all | sort)
	differ=$(comm -23 <(printf '%s\n' "$built") <(printf '%s\n' "$ours"))
	[ -z "$differ" ] || die "the function func built links other versions than go.mod's: $differ"
	log "the built binary links $(printf '%s\n' "$built" | wc -l) modules, each at go.mod's version"
	log "func build done in $(since "$t"): image $(cat .func/built-image 2>/dev/null || echo '?'), scaffolding instanced-http"
fi

# --- 3. func run in the background -------------------------------------------------------------
LOGS=$(mktemp -d -t func-check.XXXXXX)
: >"$LOGS/run.out" # before func run starts: the wait below reads it at once
RUN_PID=
stop_function() {
	local code=$?
	if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
		log "stopping the function (SIGINT to func run $RUN_PID)"
		# func run forwards the interrupt to the function (its Stop runs) and removes
		# .func/runs/PORT. Fall back to killing the process group it leads.
		kill -INT "$RUN_PID" 2>/dev/null || true
		for _ in $(seq 1 40); do
			kill -0 "$RUN_PID" 2>/dev/null || break
			sleep 0.25
		done
		if kill -0 "$RUN_PID" 2>/dev/null; then
			log "func run did not stop; killing its process group"
			kill -KILL -- "-$RUN_PID" 2>/dev/null || true
		fi
		wait "$RUN_PID" 2>/dev/null || true
	fi
	if [ "$code" -ne 0 ]; then
		echo "func-check failed (exit $code); logs in $LOGS:" >&2
		tail -n 30 "$LOGS"/run.out "$LOGS"/run.err >&2 2>/dev/null || true
	else
		rm -rf "$LOGS"
	fi
	if declare -F cleanup_run >/dev/null; then cleanup_run; fi
	log "total $(since "$T0")"
	exit "$code"
}
trap stop_function EXIT
trap 'exit 130' INT TERM

run_args=(run --builder=host --json --path "$ROOT")
if [ -n "${FUNC_ADDRESS:-}" ]; then
	run_args+=(--address "$FUNC_ADDRESS")
fi
t=$(now_ms)
log "func ${run_args[*]} (POSTGRES_URL=$POSTGRES_URL REDIS_URL=$REDIS_URL)"
# setsid: func run and the function binary get their own process group (the fallback above).
setsid "$FUNC_BIN" "${run_args[@]}" >"$LOGS/run.out" 2>"$LOGS/run.err" </dev/null &
RUN_PID=$!

# --- 4. wait for readiness -------------------------------------------------------------------
# func run scaffolds .func/runs/PORT, runs go mod tidy and go build there, starts the
# binary, waits for GET /health/readiness = 200 and only then prints its JSON address.
ADDR=
deadline=$(($(date +%s) + READY_TIMEOUT))
while :; do
	ADDR=$(sed -n 's/^{"address":"\([^"]*\)".*/\1/p' "$LOGS/run.out" | head -n 1)
	[ -n "$ADDR" ] && break
	kill -0 "$RUN_PID" 2>/dev/null || die "func run exited before the function was ready"
	[ "$(date +%s)" -lt "$deadline" ] || die "function not ready within ${READY_TIMEOUT}s"
	sleep 1
done
ready=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "$ADDR/health/readiness" || true)
[ "$ready" = 200 ] || die "GET $ADDR/health/readiness answered $ready"
live=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "$ADDR/health/liveness" || true)
log "function running at $ADDR after $(since "$t") (readiness 200, liveness $live)"

# --- 5. func invoke ---------------------------------------------------------------------------
JOB="{\"runId\":$(json_str "$RUN_ID"),\"blueprintId\":$(json_str "$BLUEPRINT_ID"),\"nodeId\":$(json_str "$NODE_ID"),\"attempt\":1}"
JOB_ID="$RUN_ID:$NODE_ID:1"
# func.yaml says invoke: http, so func invoke sends a plain POST unless told -f cloudevent.
log "func invoke -f cloudevent --target $ADDR --type $JOB_TYPE --id $JOB_ID --data $JOB"
set +e
REPLY=$("$FUNC_BIN" invoke --path "$ROOT" --target "$ADDR" -f cloudevent \
	--type "$JOB_TYPE" --source stepflow/func-check --id "$JOB_ID" \
	--content-type application/json --data "$JOB" 2>&1)
rc=$?
set -e
printf '%s\n' "$REPLY"
[ "$rc" -eq 0 ] || die "func invoke failed (exit $rc)"
# func invoke -f cloudevent exits 0 and prints nothing both for a 2xx without an event
# and for an error status (4xx/5xx): it reports only undelivered requests. The next
# invoke, in func.yaml's own format, reports the status.
grep -Eq "^[[:space:]]*type: $REPLY_TYPE\$" <<<"$REPLY" || log "func invoke printed no $REPLY_TYPE event"

# The same job again (a redelivery, as the bridge sends after a lost reply), as a
# structured-mode CloudEvent in a plain POST: func invoke's http format, which fails on
# any status above 299 and prints the reply body (the stored result's jobs).
EVENT="{\"specversion\":\"1.0\",\"id\":$(json_str "$JOB_ID"),\"type\":\"$JOB_TYPE\",\"source\":\"stepflow/func-check\",\"subject\":$(json_str "$RUN_ID"),\"datacontenttype\":\"application/json\",\"data\":$JOB}"
log "func invoke --target $ADDR --content-type application/cloudevents+json --data <structured event>"
set +e
REPLY2=$("$FUNC_BIN" invoke --path "$ROOT" --target "$ADDR" -v \
	--content-type application/cloudevents+json --data "$EVENT" 2>&1)
rc=$?
set -e
printf '%s\n' "$REPLY2"
[ "$rc" -eq 0 ] || die "func invoke (structured) failed (exit $rc)"
grep -Eq "^[[:space:]]*type: $REPLY_TYPE\$" <<<"$REPLY" ||
	die "the binary-mode invoke printed no $REPLY_TYPE event (the structured one answered the above)"
grep -Eiq "Ce-Type: $REPLY_TYPE" <<<"$REPLY2" || die "the structured-mode reply is not a $REPLY_TYPE event"
log "OK: both invokes answered with a $REPLY_TYPE event"

# --- 6. a bridge in front of func run -------------------------------------------------------------
t=$(now_ms)
log "go test -tags funccheck -run TestFuncRunBehindBridge . (STEPFLOW_FUNC_URL=$ADDR)"
STEPFLOW_FUNC_URL=$ADDR STEPFLOW_BIN=$ROOT/bin/stepflow go test -tags funccheck -count=1 -v -run '^TestFuncRunBehindBridge$' . 2>&1 |
	grep -v '^=== RUN' | tee "$LOGS/test.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || die "TestFuncRunBehindBridge failed"
log "OK: bridge in front of func run, in $(since "$t")"

# --- 6b. the benchmark's func route, in its quick form ----------------------------------------
if [ "${FUNC_CHECK_SKIP_BENCH:-}" = 1 ]; then
	log "skipping go run ./bench --quick --function func (FUNC_CHECK_SKIP_BENCH=1)"
else
	t=$(now_ms)
	log "go run ./bench --quick --function func (a func run of its own, on its own tables)"
	go run ./bench --quick --function func --func-bin "$FUNC_BIN" >"$LOGS/bench.out" 2>"$LOGS/bench.err" ||
		{ tail -n 30 "$LOGS/bench.err" >&2; die "go run ./bench --quick --function func failed"; }
	grep -E '^(function route|W steps/s|C single run|C steps/s)' "$LOGS/bench.out"
	log "OK: the benchmark's func route, in $(since "$t")"
fi

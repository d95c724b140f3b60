# stepflow — the two commands a new machine needs: `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin
BIN := bin/stepflow
PKGS := ./...

.PHONY: all build test test-short test-faults fuzz vet lint demo bench up down compose-check func-check clean

COMPOSE ?= docker compose

all: build

# The one binary; the Dockerfile's build stage runs this same target.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/stepflow

vet:
	$(GO) vet $(PKGS)

# staticcheck is pinned here rather than in go.mod: a tool of the build, not a
# dependency of the module. Its first run downloads it.
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

# gofmt, go vet and staticcheck; `make test` (and so CI) runs it first.
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(STATICCHECK) $(PKGS)

# The lint, then every test, against the real PostgreSQL, Redis and RabbitMQ
# (.ci/run starts them), then a short fuzz of blueprint decoding and validation.
test: lint compose-check
	$(GO) test -race -count=1 -timeout 12m $(PKGS)
	$(GO) test -run '^$$' -fuzz FuzzDecodeValidate -fuzztime 10s ./workflow/

test-short:
	$(GO) test -count=1 -short $(PKGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeValidate -fuzztime 2m ./workflow/

# A real workflow end to end: migrate, start function, bridge and reconciler
# as separate processes, run examples/order.json, print its steps and output.
demo: build
	@bash scripts/demo.sh

# The benchmark (docs/benchmarks.md): function and bridge as separate processes on the
# local services; W, C, L, B (a batch), R and the component baselines. Figures in bin/bench.json.
bench:
	@mkdir -p bin
	$(GO) run ./bench --json bin/bench.json $(BENCH_FLAGS)

# The fault-injection suite three times in a row (kill -9, cut connections,
# Redis loss, duplicates, poison messages).
test-faults:
	$(GO) test -count=3 -timeout 30m ./faults/

# The stack in containers (compose.yaml); waits until function, bridge, reconciler and API are ready.
up:
	$(COMPOSE) up --build --detach
	@bash scripts/compose-check.sh --ready

down:
	$(COMPOSE) down --volumes --remove-orphans

# The Dockerfile builds with `make build`; compose.yaml validates (docker-compose, when installed).
compose-check:
	@bash scripts/compose-check.sh

# The repository root as a Knative function, with the real func CLI (built once
# into ~/.cache/stepflow): func build and func run with the host builder, func
# invoke, then a bridge in front of func run (go test -tags funccheck .).
func-check:
	@bash scripts/func-check.sh

clean:
	rm -rf bin .func

# stepflow — the two commands a new machine needs: `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin
BIN := bin/stepflow
PKGS := ./...

.PHONY: all build test test-short fuzz vet lint demo up func-check clean

all: build

# The one binary; the Dockerfile's build stage runs this same target.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/stepflow

vet:
	$(GO) vet $(PKGS)

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Every test, against the real PostgreSQL, Redis and RabbitMQ (.ci/run starts
# them), then a short fuzz of blueprint decoding and validation.
test: vet
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

func-check:
	@bash scripts/func-check.sh

clean:
	rm -rf bin .func

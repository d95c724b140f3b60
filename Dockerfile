# One image for every stepflow command: function, bridge, reconciler,
# reconcile --once, migrate, dev, start, status, cancel, validate, run, graph.
#
#   docker build -t stepflow .
#   docker run --rm stepflow validate /examples/order.json
#   docker run --rm -e POSTGRES_URL=... stepflow migrate
#
# The build stage runs the Makefile's own build target, so the image holds
# the same binary as `make build` (scripts/compose-check.sh checks this).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# = CGO_ENABLED=0 go build -trimpath -o bin/stepflow ./cmd/stepflow
RUN make build && ./bin/stepflow --help >/dev/null

# distroless static, nonroot variant: no shell, no package manager, uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/stepflow /usr/local/bin/stepflow
# Example blueprints and their inputs: BLUEPRINTS_DIR=/examples for the
# function, and `stepflow start /examples/order.json --input @/examples/order.input.json`.
COPY examples/*.json /examples/
# Inside a container, listen on every interface (the binary's defaults are
# 127.0.0.1). Override per command as needed.
ENV LISTEN_ADDRESS=0.0.0.0:8080 \
    BRIDGE_HTTP_ADDRESS=0.0.0.0:9091 \
    RECONCILER_HTTP_ADDRESS=0.0.0.0:9092
# 8080: function (CloudEvents, /health/*, /metrics); 9091: bridge and
# 9092: reconciler (/health/*, /metrics).
EXPOSE 8080 9091 9092
USER 65532:65532
# No HEALTHCHECK: distroless has no shell and no curl/wget to run one, and
# the binary has no probe subcommand. Orchestrators probe over HTTP instead
# (Kubernetes/Knative probes on /health/readiness and /health/liveness;
# compose orders start-up with depends_on and the bridge waits for the
# function's readiness itself).
ENTRYPOINT ["/usr/local/bin/stepflow"]
CMD ["--help"]

// Package stepflow makes this repository a Knative function: `func build`,
// `func run` and `func deploy` on the repository root turn it into the step
// function service, the same one `stepflow function` serves (see
// docs/knative.md).
//
// The func CLI scaffolds a small main package under .func/ that imports this
// root package as `f` (through a `replace github.com/stepflow/stepflow => ./f`
// in the scaffolded go.mod). With `invoke: http` in func.yaml that main is
// `http.Start(f.New())` from knative.dev/func-go/http: this package must
// declare a package-level New() with no arguments that returns an instanced
// HTTP function, a value with Handle(http.ResponseWriter, *http.Request) and
// optionally Start, Stop, Ready and Alive. It must not declare a
// package-level Handle (in any root .go file, tests included), which would
// make the function "static" instead.
//
// func-go's HTTP service answers GET /health/readiness and /health/liveness
// itself, through Ready and Alive, and hands every other path to Handle.
// Handle serves the step function's own HTTP handler, the one `stepflow
// function` serves: one CloudEvent per request in binary or structured
// mode, CloudEvents batches, /metrics, with the same status codes, each
// request in its own goroutine.
//
// The package name is free (the scaffolding imports it under the alias f);
// it is stepflow to match the module path. The step function itself lives in
// github.com/stepflow/stepflow/function; the node implementations it can run
// are the example registry.
package stepflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	fhttp "knative.dev/func-go/http"

	examples "github.com/stepflow/stepflow/examples/nodes"
	stepfunction "github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/telemetry"
)

// Function is the step function as func-go's HTTP scaffolding serves it:
// the step function, its metrics registry, and the routes `stepflow
// function` serves.
type Function struct {
	step    *stepfunction.Function
	handler http.Handler
	logErr  error       // a bad LOG_LEVEL or LOG_FORMAT: Start fails with it
	pprof   atomic.Bool // STEPFLOW_PPROF

	mu          sync.Mutex
	stopTracing func(context.Context) error // nil once stopped
}

// New returns the step function, unstarted; func-go calls its Start with the
// process environment (POSTGRES_URL, REDIS_URL, ...) before serving.
//
// Logging follows LOG_LEVEL and LOG_FORMAT as `stepflow function` does
// (func-go's own lines, through zerolog, at the same level).
func New() *Function {
	f := &Function{}
	logger, err := newLogger(os.Getenv("LOG_LEVEL"), os.Getenv("LOG_FORMAT"))
	if err != nil {
		f.logErr = err
	} else {
		slog.SetDefault(logger)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f.step = stepfunction.New(stepfunction.Options{Registry: examples.Registry(), Logger: slog.Default(), Registerer: reg})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/debug/pprof/", f.debug(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", f.debug(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", f.debug(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", f.debug(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", f.debug(http.HandlerFunc(pprof.Trace)))
	mux.Handle("/health/", f.step.Health())
	mux.Handle("/", f.step)
	f.handler = mux
	return f
}

// Handle serves one request: a CloudEvent or a CloudEvents batch on any
// path but /metrics and /health/* (and /debug/pprof/ with STEPFLOW_PPROF).
//
// func-go's server cuts every response 30 s after its request was read
// (http.Server.WriteTimeout). `stepflow function` sets no such limit: a
// batch whose nodes have long time limits may take longer, and its caller
// bounds it (the bridge's request timeout, Knative's revision timeout).
// Handle lifts the limit for its request so that both serve the same.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	f.handler.ServeHTTP(w, r)
}

// Start connects to PostgreSQL and Redis with the configuration func-go
// passes (the process environment and the static ./cfg file), and exports
// traces when the OTEL_* variables ask for it. An error stops the process.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if f.logErr != nil {
		return f.logErr
	}
	if v := cfg["STEPFLOW_PPROF"]; v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("STEPFLOW_PPROF=%q: want true or false", v)
		}
		f.pprof.Store(on)
	}
	stop, err := telemetry.Setup(ctx, "stepflow-function")
	if err != nil {
		return fmt.Errorf("OpenTelemetry (OTEL_* variables): %w", err)
	}
	f.mu.Lock()
	f.stopTracing = stop
	f.mu.Unlock()
	return f.step.Start(ctx, cfg)
}

// Stop closes the connections once answered requests released their
// leases, then flushes pending spans.
func (f *Function) Stop(ctx context.Context) error {
	err := f.step.Stop(ctx)
	f.mu.Lock()
	stop := f.stopTracing
	f.stopTracing = nil
	f.mu.Unlock()
	if stop != nil {
		err = errors.Join(err, stop(ctx))
	}
	return err
}

// Ready reports whether PostgreSQL and Redis answer (GET /health/readiness).
func (f *Function) Ready(ctx context.Context) (bool, error) { return f.step.Ready(ctx) }

// Alive reports whether the function could start (GET /health/liveness).
func (f *Function) Alive(ctx context.Context) (bool, error) { return f.step.Alive(ctx) }

// debug serves h only when STEPFLOW_PPROF is on, as `stepflow function
// --pprof` does; otherwise the path is the step function's (405, or 400).
func (f *Function) debug(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.pprof.Load() {
			f.step.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// newLogger is `stepflow --log-level L --log-format F`'s logger: text or
// JSON on stderr (default info, text). It sets func-go's zerolog level to
// match.
func newLogger(levelName, format string) (*slog.Logger, error) {
	if levelName == "" {
		levelName = "info"
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(levelName)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", levelName)
	}
	switch {
	case level <= slog.LevelDebug:
		fhttp.SetLogLevel(fhttp.LogDebug)
	case level <= slog.LevelInfo:
		fhttp.SetLogLevel(fhttp.LogInfo)
	default:
		fhttp.SetLogLevel(fhttp.LogWarn)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("LOG_FORMAT=%q: want text or json", format)
	}
}

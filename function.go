// Package stepflow makes this repository a Knative function: `func build`,
// `func run` and `func deploy` on the repository root turn it into the step
// function service (see docs/knative.md).
//
// The func CLI scaffolds a small main package under .func/ that imports this
// root package as `f` (through a `replace github.com/stepflow/stepflow => ./f`
// in the scaffolded go.mod) and calls `ce.Start(f.New())` from
// knative.dev/func-go/cloudevents. So this package must declare a package-level
// New() with no arguments that returns an instanced function: a value with
// Handle(context.Context, event.Event) (*event.Event, error) and optionally
// Start, Stop, Ready and Alive. It must not declare a package-level Handle,
// which would make the function "static" instead.
//
// The package name is free (the scaffolding imports it under the alias f);
// it is stepflow to match the module path. The step function itself lives in
// github.com/stepflow/stepflow/function; the node implementations it can run
// are the example registry.
package stepflow

import (
	examples "github.com/stepflow/stepflow/examples/nodes"
	stepfunction "github.com/stepflow/stepflow/function"
)

// New returns the step function, unstarted; func-go calls its Start with the
// process environment (POSTGRES_URL, REDIS_URL, ...) before serving.
func New() *stepfunction.Function {
	return stepfunction.New(stepfunction.Options{Registry: examples.Registry()})
}

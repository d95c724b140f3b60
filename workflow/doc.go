// Package workflow is the pure core of stepflow: Flowcraft blueprint types
// and strict JSON decoding, validation, graph analysis, routing (actions,
// conditions, transforms), join and skip rules, input resolution, the node
// contract and registry, and an in-process runner.
//
// Every distributed part of stepflow (the step function, the reconciler)
// asks this package the same questions — which edges does a result take,
// is a join ready, what input does a node get — so the answers live here
// once. The package does no I/O and must not import infrastructure
// packages (AMQP, Postgres, Redis, HTTP).
package workflow

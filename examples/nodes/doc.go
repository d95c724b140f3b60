// Package nodes holds the example node implementations that the example
// blueprints in examples/*.json use, the demo runs and the tests of the
// runtime exercise: nodes that fail, retry, wait and write the run context
// on purpose, an order pipeline and a document pipeline.
//
// Every node is deterministic: its output depends only on its input, its
// params and the run and node ids, never on a clock or a random source, so
// a test can assert exact outputs and a retried or redelivered step
// produces the same result (ids derived from the run id double as
// idempotency keys).
//
// Like the workflow package it builds on, this package does no I/O and
// imports no infrastructure.
package nodes

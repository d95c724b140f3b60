// Package function is stepflow's step function: a stateless CloudEvent
// handler that runs, for each job it is sent (one per request, or a
// batch), one node of one run against PostgreSQL (the truth) and Redis
// (step leases), and replies with the jobs to publish next. It is an
// instanced Knative function (knative.dev/func-go): New, Handle, Start,
// Stop, Ready, Alive.
//
// step.go holds the step algorithm; the rest is configuration and
// plumbing.
package function

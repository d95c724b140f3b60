// Package api is stepflow's HTTP API: JSON under /api/v1/ to list, read,
// start, cancel and resume runs and to list and replay dead letters, the
// webhook URLs webhook nodes output (/webhooks/), and /health/liveness,
// /health/readiness and /metrics beside it, and the web console (package
// console) at /. `stepflow api` serves it, and so does `stepflow dev`.
// docs/api.md is its reference.
//
// Every handler works through the client package, the code the CLI uses,
// so the API and the CLI cannot disagree about a run; the API adds HTTP
// only: routing, the bearer token on writes, request limits, status codes
// and JSON errors ({"error": "..."}, with "causes" naming JSON paths).
// Each resource has a file of its own (runs.go, resume.go, webhooks.go,
// deadletters.go, health.go); server.go holds what they share.
//
// It must not import internal/store, internal/jobqueue, function, bridge
// or reconciler: what it needs from PostgreSQL or RabbitMQ is added to
// client.
//
// A webhook route is registered with access ownToken: the URL's one-shot
// token is its credential, not the API token (docs/pausing.md).
package api

// Package bridge connects the RabbitMQ job queue to the HTTP step function.
//
// A Bridge consumes workflow jobs from a durable queue (manual acks, bounded
// prefetch and requests in flight), POSTs them to the step function as
// CloudEvents batches (the jobs waiting when a request slot frees, up to
// BatchSize; a lone job goes at once) or, with BatchSize 1, one binary-mode
// CloudEvent per job, and acts on each job's answer: it publishes the next jobs,
// acks, retries through TTL delay queues, or dead-letters. When a request slot
// is free and nothing waits, it also hands the next jobs, once published,
// straight to the function (handon.go); their published copies stay the
// durable ones. A batch the function
// refuses as a whole (400, 415: it takes one event per request) is not failed:
// its jobs go again one per request, and so do all later ones. The whole
// table of what happens to a delivery lives in policy.go; read that file
// first. The rest, by concern: config.go, bridge.go (Run: reconnecting,
// draining), session.go (one AMQP connection), inbox.go (making batches),
// handle.go (one request slot's batch), call.go (the HTTP call), reply.go
// (reading replies), settle.go (carrying decisions out), handon.go (handing
// jobs on).
//
// The queue's topology, headers and publisher are internal/jobqueue's,
// shared with the client and the reconciler, so that every job on the queue
// carries the same message id, properties and delay headers.
//
// bridge imports the RabbitMQ, CloudEvents, Prometheus and OpenTelemetry
// libraries and internal/jobqueue, internal/wire and internal/telemetry; it
// must not import the workflow core, the function, Postgres or Redis. It knows
// jobs as opaque JSON plus ids, never how a node runs.
package bridge

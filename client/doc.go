// Package client is how a program starts, watches, cancels and resumes
// stepflow runs and re-drives their dead letters. Start records a run in PostgreSQL
// (its blueprint pinned to it, its input as the initial context, a ready
// step per start node) and publishes its start jobs to RabbitMQ; the
// bridge, the step function and the reconciler do the rest. Wait and
// Result read a run back as the workflow.RunResult that an in-memory run
// (workflow.Run, `stepflow run --local`) gives, so the two print alike.
// Runs lists runs newest first, a page at a time (with their progress when
// asked); Inspect reads one run with its blueprint snapshot and every
// step's input and output; Blueprint finds a stored blueprint by id.
// Resume resumes a run at its awaiting wait node, and ResumeWebhook does
// what a request to a webhook node's URL does. `stepflow start`, `status`,
// `cancel`, `resume` and `dlq`, and the HTTP API (package api), are built
// on it.
//
// Its API speaks its own words (Config, DeadLetter, DeadLetterFilter,
// Replayed, ErrRunNotFound, …) and workflow's public ones (Blueprint,
// RunResult, RunStatus); the store's types stay behind it and are
// converted at its boundary.
//
// A client runs in the user's program, next to none of stepflow's
// services, so it must not import bridge, function, reconciler or cmd. It
// imports workflow, schema, internal/store for PostgreSQL,
// internal/jobqueue to publish jobs and internal/telemetry for the run's
// trace.
package client

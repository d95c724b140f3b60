// Package console is stepflow's web console: server-rendered pages for a
// person watching runs, served by the API server (`stepflow api`,
// `stepflow dev`) at /.
//
//	GET /                     the runs, newest first: filter, search, pages
//	GET /runs/{id}            a run: its blueprint drawn as a graph coloured
//	                          by step state, its steps with inputs and outputs,
//	                          its context; cancel, resume, replay
//	GET /dead-letters         the dead letters, with replay
//	GET /fragments/...        the live parts of those pages, polled while runs run
//	GET /assets/...           the stylesheet and the script
//
// Pages are html/template (so whatever a blueprint, an input or an output
// holds is text, in the SVG too) with their assets embedded, so the binary
// stays one file; a small plain script polls the live parts and sends the
// writes. It has no write handler of its own: its buttons call the JSON
// API (/api/v1/...) from the browser, with the API token the user gives
// when the server has one, so the API's access rules are the console's.
//
// It reads through the client package, like the API and the CLI, never
// PostgreSQL itself; it must not import api (which mounts it),
// internal/store, internal/jobqueue, function, bridge or reconciler. The
// graph layout is in console/layout, which imports nothing of stepflow.
package console

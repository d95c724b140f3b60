// Package store is stepflow's PostgreSQL access: runs, contexts, steps and
// blueprint snapshots, shared by the step function, the client and the
// reconciler. PostgreSQL is the truth; every state change of a step is one
// transaction here.
package store

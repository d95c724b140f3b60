package faults

// A batch whose every job is published twice.

import "testing"

// Every job the bridge publishes goes twice (each worker's, the
// gather's), and the scatter's job is delivered again as in
// TestBatchScatterRedelivered: still one set of workers, each committed
// once, one gather, and no job dead-lettered.
//
// It fails today: a duplicate delivery of a worker whose step has
// succeeded re-emits the gather's job while the gather is pending
// (function.reemit lists the worker's taken edge to the gather), and a
// job of the gather arriving after the gather finished still needs the
// gather's lease before it learns so. The hundreds of gather jobs that
// 500 duplicated workers make contend for that one lease, held in turn by
// whichever batch of jobs holds one of them; the others are answered 409
// ("being run by another delivery") until the bridge's transport attempts
// run out, and are dead-lettered although the run completed correctly.
func TestBatchPublishedTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{bridgeArgs: []string{"--publish-copies", "2"}})
	b.scatterAgain(t)
}

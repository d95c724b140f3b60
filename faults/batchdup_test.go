package faults

// A batch whose every job is published twice.

import "testing"

// Every job the bridge publishes goes twice (each worker's, the
// gather's), and the scatter's job is delivered again as in
// TestBatchScatterRedelivered: still one set of workers, each committed
// once, one gather, and no job dead-lettered.
//
// Hundreds of the gather's jobs are in flight (a duplicated worker whose
// step succeeded re-emits the gather's while it is pending), many in one
// request: a copy whose step another delivery (or an earlier copy in the
// batch) holds is read without the lease and answered 200 once the step
// is done with, instead of 409 until its transport attempts run out.
func TestBatchPublishedTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{bridgeArgs: []string{"--publish-copies", "2"}})
	b.scatterAgain(t)
}

package reconciler_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

// A job a quorum queue dead-letters itself (returned to the queue more
// than its delivery limit: a bridge killed by it over and over) carries no
// bridge headers; the reconciler records it with RabbitMQ's reason and
// fails its run.
func TestQuorumDeliveryLimitDeadLetterFailsItsRun(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.chainMissingB()
	q := "rtq-" + uuid.NewString()
	t.Cleanup(func() { testenv.DeleteQueues(t, tb.conn, jobqueue.TopologyQueues(q)...) })
	pub := jobqueue.NewTopologyPublisher(testenv.RabbitMQURL(), jobqueue.Topology{Queue: q, Type: jobqueue.QueueQuorum})
	t.Cleanup(pub.Close)
	if err := pub.Publish(tb.ctx, job(runID, "chain", "b", 1), 0); err != nil {
		t.Fatal(err)
	}
	ch, err := tb.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= jobqueue.QuorumDeliveryLimit; i++ {
		select {
		case d := <-deliveries:
			if err := d.Nack(false, true); err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery %d did not come", i+1)
		}
	}

	onQuorum := func(o *reconciler.Options) { o.Queue = q }
	var st reconciler.Stats
	deadline := time.Now().Add(10 * time.Second)
	for st.DeadLetters == 0 && time.Now().Before(deadline) { // the DLQ gets it once the last return is applied
		st = tb.reconcile(tb.newReconciler(pub, onQuorum))
		if st.DeadLetters == 0 {
			<-time.After(20 * time.Millisecond) // poll interval
		}
	}
	if st.DeadLetters != 1 || st.DeadLetterRuns != 1 {
		t.Fatalf("stats %+v; want the dead letter recorded and its run failed", st)
	}
	run := tb.run(runID)
	if run.Status != workflow.RunFailed || !strings.Contains(run.Error, "delivery_limit") || !strings.Contains(run.Error, q) {
		t.Errorf("run %s: %s %q; want failed naming delivery_limit and the queue", runID, run.Status, run.Error)
	}
}

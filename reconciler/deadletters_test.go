package reconciler_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

// deadLetter is a message as the bridge puts it on <queue>.dlq.
type deadLetter struct {
	id, code, reason string
	attempts         int32
	firstFailure     time.Time
	messageID        string
	body             []byte
}

func jobDeadLetter(j wire.Job, code, reason string) deadLetter {
	body, err := json.Marshal(j)
	if err != nil {
		panic(err)
	}
	return deadLetter{
		id: uuid.NewString(), code: code, reason: reason, attempts: 1,
		firstFailure: time.Now().UTC().Add(-time.Minute).Truncate(time.Second),
		messageID:    j.ID(), body: body,
	}
}

// publishDeadLetter puts dl on the dead-letter queue the way the bridge
// does (bridge.Bridge.carryOut, KindDeadLetter), and waits for the confirm.
func (tb *testBundle) publishDeadLetter(dl deadLetter) {
	tb.t.Helper()
	msg := amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    dl.messageID,
		Timestamp:    time.Now(),
		Body:         dl.body,
		Headers: amqp.Table{
			jobqueue.HeaderDeadLetterID: dl.id,
			jobqueue.HeaderErrorCode:    dl.code,
			jobqueue.HeaderErrorReason:  dl.reason,
			jobqueue.HeaderAttempts:     dl.attempts,
			jobqueue.HeaderFirstFailure: dl.firstFailure.Format(time.RFC3339),
		},
	}
	testenv.PublishConfirmed(tb.t, tb.pubCh, jobqueue.DeadLetterQueue(tb.queue), msg)
}

func (tb *testBundle) deadLetterRows() int {
	tb.t.Helper()
	var n int
	if err := tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM `+tb.tables.Quoted().DeadLetters).Scan(&n); err != nil {
		tb.t.Fatal(err)
	}
	return n
}

func TestDeadLettersFailTheirRunAndRedrive(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.chainMissingB()
	// b's job was dead-lettered by the bridge (its reply was a 422).
	dead := jobDeadLetter(job(runID, "chain", "b", 1), "422", `blueprint "chain" has no node "b"`)
	tb.publishDeadLetter(dead)
	garbage := deadLetter{id: uuid.NewString(), code: "400", reason: "job body is not a job JSON object", attempts: 1,
		firstFailure: time.Now().UTC().Truncate(time.Second), body: []byte("\x00 not a job")}
	tb.publishDeadLetter(garbage)
	r := tb.newReconciler(nil)

	st := tb.reconcile(r)

	if want := (reconciler.Stats{DeadLetters: 2, DeadLetterRuns: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	tb.assertNothingQueued() // the DLQ is drained, nothing republished
	run := tb.run(runID)
	wantErr := store.DeadLetterErrorPrefix + dead.code + ": " + dead.reason
	if run.Status != workflow.RunFailed || run.Error != wantErr {
		t.Errorf("run: %s %q, want failed %q", run.Status, run.Error, wantErr)
	}
	if got, _ := run.StatusData["error"].(string); !strings.Contains(got, dead.reason) {
		t.Errorf("status_data.error %q does not name the reason %q", got, dead.reason)
	}
	if got, _ := run.StatusData["nodeId"].(string); got != "b" {
		t.Errorf("status_data.nodeId %q, want b", got)
	}

	dls, err := tb.client.DeadLetters(tb.ctx, client.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 {
		t.Fatalf("recorded %d dead letters, want 2: %+v", len(dls), dls)
	}
	byID := map[string]client.DeadLetter{}
	for _, dl := range dls {
		byID[dl.DeadLetterID] = dl
	}
	got := byID[dead.id]
	if got.RunID != runID || got.NodeID != "b" || got.BlueprintID != "chain" || got.MessageID != dead.messageID ||
		got.Code != "422" || got.Reason != dead.reason || got.Attempts != 1 ||
		got.FirstFailure == nil || !got.FirstFailure.Equal(dead.firstFailure) || string(got.Body) != string(dead.body) {
		t.Errorf("job dead letter recorded as %+v (body %q)", got, got.Body)
	}
	if got.Headers[jobqueue.HeaderErrorReason] != dead.reason {
		t.Errorf("recorded headers %v lack %s", got.Headers, jobqueue.HeaderErrorReason)
	}
	g := byID[garbage.id]
	if g.DeadLetterID == "" || g.RunID != "" || g.Code != "400" || string(g.Body) != string(garbage.body) {
		t.Errorf("garbage dead letter recorded as %+v (body %q)", g, g.Body)
	}

	// A second pass has nothing left to record.
	if st := tb.reconcile(r); st != (reconciler.Stats{}) {
		t.Errorf("second pass stats %+v, want zero", st)
	}
	if n := tb.deadLetterRows(); n != 2 {
		t.Errorf("%d dead letter rows after the second pass, want 2", n)
	}

	// Redrive: the run runs again from b and completes.
	rep, err := tb.client.ReplayDeadLetters(tb.ctx, "")
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if !slices.Equal(rep.Runs, []string{runID}) || rep.Jobs != 1 || !slices.Equal(rep.Unplayable, []string{garbage.id}) {
		t.Errorf("replay %+v, want runs [%s], 1 job, unplayable [%s]", rep, runID, garbage.id)
	}
	if run := tb.run(runID); run.Status != workflow.RunRunning || run.Error != "" {
		t.Errorf("after replay the run is %s %q, want running without error", run.Status, run.Error)
	}
	republished := tb.takeQueued()
	assertJobs(t, "replayed", republished, job(runID, "chain", "b", 1))
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, chainOutputs)

	left, err := tb.client.DeadLetters(tb.ctx, client.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].DeadLetterID != garbage.id {
		t.Errorf("unreplayed dead letters %+v, want only the garbage one", left)
	}
	// The replayed dead letter, redelivered to the DLQ by a broker hiccup,
	// must not fail the completed run.
	tb.publishDeadLetter(dead)
	tb.reconcile(r)
	if run := tb.run(runID); run.Status != workflow.RunCompleted {
		t.Errorf("a re-ingested old dead letter turned the completed run %s", run.Status)
	}
}

// A dead letter delivered again (the reconciler recorded it, then lost its
// channel before the ack) is recorded once and fails its run once.
func TestDeadLetterRedeliveredIsRecordedOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.chainMissingB()
	dead := jobDeadLetter(job(runID, "chain", "b", 1), "503", "function unavailable after 5 attempts")
	tb.publishDeadLetter(dead)
	r := tb.newReconciler(nil)
	if st := tb.reconcile(r); st != (reconciler.Stats{DeadLetters: 1, DeadLetterRuns: 1}) {
		t.Errorf("first pass stats %+v, want one dead letter failing one run", st)
	}
	failed := tb.run(runID)

	tb.publishDeadLetter(dead) // the same message again
	st := tb.reconcile(r)

	if n := tb.deadLetterRows(); n != 1 {
		t.Errorf("%d dead letter rows, want 1", n)
	}
	if run := tb.run(runID); run.Status != workflow.RunFailed || !run.UpdatedAt.Equal(failed.UpdatedAt) || run.Error != failed.Error {
		t.Errorf("run changed by the duplicate: %s %q at %s", run.Status, run.Error, run.UpdatedAt)
	}
	if st.DeadLetterRuns != 0 {
		t.Errorf("duplicate pass failed %d runs again", st.DeadLetterRuns)
	}
	// Stats.DeadLetters is documented as "dead letters recorded"; the
	// duplicate recorded nothing.
	if st.DeadLetters != 0 {
		t.Errorf("duplicate pass reports %d dead letters recorded, want 0 (the message was already recorded: IngestDeadLetters counts the rows it inserts)", st.DeadLetters)
	}
}

// A dead letter for a step that has since finished (a duplicate delivery
// that kept getting 409 while the first delivery ran the node, and was
// dead-lettered after the bridge's attempts) must not fail a healthy run.
func TestDeadLetterOfAFinishedStepDoesNotFailTheRun(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.chainMissingB()
	next := tb.deliver(job(runID, "chain", "b", 1)) // the first delivery of b succeeds
	assertJobs(t, "after b", next, job(runID, "chain", "c", 1))
	tb.publishDeadLetter(jobDeadLetter(job(runID, "chain", "b", 1), "409", "step "+runID+"/b is being run by another delivery"))

	st := tb.reconcile(tb.newReconciler(nil))

	if st.DeadLetters != 1 {
		t.Errorf("stats %+v: the dead letter is not recorded", st)
	}
	if run := tb.run(runID); run.Status != workflow.RunRunning {
		t.Fatalf("run is %s (%q) after a dead letter of its already succeeded step b, want still running", run.Status, run.Error)
	}
	tb.deliverAll(next...)
	tb.assertCompleted(runID, chainOutputs)
}

// A dead letter whose fields PostgreSQL cannot store (a NUL in the run id,
// from a malformed job) must not wedge the reconciler: it is set aside and
// the pass goes on to repair stalled runs.
func TestPoisonDeadLetterDoesNotBlockReconciliation(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	stalled := tb.chainMissingB()
	tb.age(stalled)
	tb.publishDeadLetter(deadLetter{id: uuid.NewString(), code: "503", reason: "load: invalid byte sequence", attempts: 5,
		firstFailure: time.Now().UTC().Truncate(time.Second), messageID: "bad:b:1",
		body: []byte(`{"runId": "bad\u0000run", "blueprintId": "chain", "nodeId": "b"}`)})
	r := tb.newReconciler(nil)

	st, err := r.Run(tb.ctx)

	if err != nil {
		t.Errorf("reconcile pass failed on a poison dead letter: %v", err)
	}
	if st.Republished != 1 {
		t.Errorf("stats %+v: the stalled run was not repaired", st)
	}
	if d := tb.queueDepths()[jobqueue.DeadLetterQueue(tb.queue)]; d != 0 {
		t.Errorf("the poison dead letter is still in the DLQ (%d messages): every pass will stop at it", d)
	}
	// A second pass must not stop at it either.
	if _, err := r.Run(tb.ctx); err != nil {
		t.Errorf("second pass: %v", err)
	}
}

package bridge

import (
	"net/http"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/wire"
)

// A delayed job comes back after about its delay, having passed through
// several buckets without calling the function on the way.
func TestDelayedJobArrivesOnTime(t *testing.T) {
	t.Parallel()
	tb := setup(t, noContent)
	tb.start()
	const delay = 1500 * time.Millisecond
	published := time.Now()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "later"}, delay)
	r := tb.nextRequest(wait)
	if took := r.At.Sub(published); took < delay || took > delay+500*time.Millisecond {
		t.Errorf("delayed job arrived after %s, want about %s", took, delay)
	}
	tb.waitOutcome(outcomeAck, 1, wait)
	if n := tb.calls.Load(); n != 1 {
		t.Errorf("function called %d times, want 1 (no calls while delayed)", n)
	}
	tb.stopAndAssertEmpty()
	if n := tb.outcomes(outcomeRedelayed); n < 1 {
		t.Errorf("redelayed = %d, want the job to go down the ladder", n)
	}
}

// A short delay published after a long one is not stuck behind it.
func TestShortDelayOvertakesLongDelay(t *testing.T) {
	t.Parallel()
	tb := setup(t, noContent)
	tb.start()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "long"}, 10*time.Second)
	published := time.Now()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "short"}, 200*time.Millisecond)
	r := tb.nextRequest(wait)
	if id := r.Header.Get("Ce-Id"); id != "r:short:1" {
		t.Fatalf("first job to arrive is %s, want the 200ms one", id)
	}
	if took := r.At.Sub(published); took < 200*time.Millisecond || took > time.Second {
		t.Errorf("200ms job arrived after %s", took)
	}
	// The long one is still waiting in its bucket.
	if n := tb.count(tb.queue + ".delay.5120"); n != 1 {
		t.Errorf("long job not in the 5120ms bucket (%d there)", n)
	}
}

// A retried delivery goes through the delay queues with x-attempts and
// x-first-failure, keeping its headers and message id.
func TestRetryRepublishHeaders(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}, single) // a batch result carries no Retry-After
	tb.start()
	before := time.Now()
	tb.publishRaw(amqp.Publishing{
		ContentType: "application/json",
		MessageId:   "r:n:1",
		Body:        []byte(`{"runId":"r","blueprintId":"bp","nodeId":"n"}`),
		Headers:     amqp.Table{"x-custom": "kept"},
	})
	tb.nextRequest(wait)
	tb.waitOutcome(outcomeRetried, 1, wait)
	d := tb.get(tb.queue+".delay.20480", wait) // largest bucket ≤ 30s
	if d.MessageId != "r:n:1" || headerStr(t, d.Headers, "x-custom") != "kept" {
		t.Errorf("retry lost properties: id %q headers %v", d.MessageId, d.Headers)
	}
	if n, _ := jobqueue.HeaderInt(d.Headers, jobqueue.HeaderAttempts); n != 1 {
		t.Errorf("x-attempts = %v, want 1", d.Headers[jobqueue.HeaderAttempts])
	}
	if _, err := time.Parse(time.RFC3339, headerStr(t, d.Headers, jobqueue.HeaderFirstFailure)); err != nil {
		t.Errorf("x-first-failure: %v", err)
	}
	due, _ := jobqueue.HeaderInt(d.Headers, jobqueue.HeaderDue)
	// x-stepflow-due has millisecond precision.
	if at := time.UnixMilli(due); at.Before(before.Truncate(time.Millisecond).Add(30 * time.Second)) {
		t.Errorf("due %s, want at least Retry-After (30s) after the failure", at)
	}
	tb.stopAndAssertEmpty()
}

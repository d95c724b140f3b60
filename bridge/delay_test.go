package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/testenv"
)

// DeclareTopology accepts a main queue that the Flowcraft adapter declared
// (durable, no arguments) and is idempotent.
func TestDeclareTopologyIdempotent(t *testing.T) {
	t.Parallel()
	conn := dialTest(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := "test-" + uuid.NewString()
	t.Cleanup(func() { testenv.DeleteQueues(t, conn, TopologyQueues(q)...) })
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil { // as Flowcraft did
		t.Fatal(err)
	}
	for range 2 {
		if err := DeclareTopology(ch, q); err != nil {
			t.Fatalf("DeclareTopology: %v", err)
		}
	}
	for _, name := range TopologyQueues(q) {
		if _, err := ch.QueueDeclarePassive(name, true, false, false, false, nil); err != nil {
			t.Fatalf("queue %s missing: %v", name, err)
		}
	}
}

// Publish writes a persistent JSON message with the job id as message id,
// straight to the main queue or, delayed, to the right bucket with its due time.
func TestPublish(t *testing.T) {
	t.Parallel()
	tb := setup(t, noContent)
	job := Job{RunID: "r", BlueprintID: "bp", NodeID: "n", Attempt: 2}
	tb.publishJob(job, 0)
	d := tb.get(tb.queue, wait)
	want, _ := json.Marshal(job)
	if string(d.Body) != string(want) || d.MessageId != "r:n:2" || d.ContentType != "application/json" || d.DeliveryMode != amqp.Persistent {
		t.Errorf("published %s id %q ct %q mode %d", d.Body, d.MessageId, d.ContentType, d.DeliveryMode)
	}
	if _, ok := d.Headers[HeaderDue]; ok {
		t.Errorf("undelayed job has %s", HeaderDue)
	}

	before := time.Now()
	tb.publishJob(job, 1500*time.Millisecond)
	d = tb.get(tb.queue+".delay.1280", wait)
	due, ok := headerInt(d.Headers, HeaderDue)
	if !ok {
		t.Fatalf("delayed job has no %s: %v", HeaderDue, d.Headers)
	}
	if at := time.UnixMilli(due); at.Before(before.Add(1499*time.Millisecond)) || at.After(time.Now().Add(1500*time.Millisecond)) {
		t.Errorf("due %s, want publish time + 1.5s", at)
	}

	ctx := context.Background()
	if err := Publish(ctx, tb.ch, tb.queue, Job{RunID: "r"}, 0); err == nil {
		t.Error("Publish accepted a job without node and blueprint ids")
	}
	plain, err := tb.conn.Channel() // not in confirm mode
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := Publish(ctx, plain, tb.queue, job, 0); err == nil {
		t.Error("Publish on a channel without confirms did not fail")
	}
}

// A delayed job comes back after about its delay, having passed through
// several buckets without calling the function on the way.
func TestDelayedJobArrivesOnTime(t *testing.T) {
	t.Parallel()
	tb := setup(t, noContent)
	tb.start()
	const delay = 1500 * time.Millisecond
	published := time.Now()
	tb.publishJob(Job{RunID: "r", BlueprintID: "bp", NodeID: "later"}, delay)
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
	tb.publishJob(Job{RunID: "r", BlueprintID: "bp", NodeID: "long"}, 10*time.Second)
	published := time.Now()
	tb.publishJob(Job{RunID: "r", BlueprintID: "bp", NodeID: "short"}, 200*time.Millisecond)
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
	if n, _ := headerInt(d.Headers, HeaderAttempts); n != 1 {
		t.Errorf("x-attempts = %v, want 1", d.Headers[HeaderAttempts])
	}
	if _, err := time.Parse(time.RFC3339, headerStr(t, d.Headers, HeaderFirstFailure)); err != nil {
		t.Errorf("x-first-failure: %v", err)
	}
	due, _ := headerInt(d.Headers, HeaderDue)
	// x-stepflow-due has millisecond precision.
	if at := time.UnixMilli(due); at.Before(before.Truncate(time.Millisecond).Add(30 * time.Second)) {
		t.Errorf("due %s, want at least Retry-After (30s) after the failure", at)
	}
	tb.stopAndAssertEmpty()
}

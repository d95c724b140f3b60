package jobqueue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/testenv"
)

func TestParseQueueType(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want QueueType
		ok   bool
	}{
		{"", QueueClassic, true}, {"classic", QueueClassic, true}, {"quorum", QueueQuorum, true},
		{"Quorum", "", false}, {"stream", "", false},
	} {
		got, err := ParseQueueType(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseQueueType(%q) = %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// setupQuorum is setup with a quorum topology.
func setupQuorum(t *testing.T) *testBundle {
	t.Helper()
	tb := &testBundle{t: t, conn: testenv.RabbitMQ(t), queue: "jq-" + testenv.RandomHex(8)}
	ch, err := tb.conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}
	tb.ch = ch
	t.Cleanup(func() { testenv.DeleteQueues(t, tb.conn, TopologyQueues(tb.queue)...) })
	topo := Topology{Queue: tb.queue, Type: QueueQuorum}
	for range 2 { // idempotent
		if err := topo.Declare(ch); err != nil {
			t.Fatalf("declare quorum topology: %v", err)
		}
	}
	return tb
}

// Every queue of a quorum topology is a quorum queue: declaring any of them
// again as a classic queue is refused by the broker, and the error names
// the queue and the setting.
func TestQuorumTopologyQueuesAreQuorum(t *testing.T) {
	t.Parallel()
	tb := setupQuorum(t)
	args := map[string]amqp.Table{tb.queue: mainArgs(QueueQuorum, DeadLetterQueue(tb.queue)), DeadLetterQueue(tb.queue): dlqArgs(QueueQuorum)}
	for _, d := range delayBuckets() {
		args[delayQueueName(tb.queue, d)] = delayArgs(QueueQuorum, tb.queue, d)
	}
	for _, name := range TopologyQueues(tb.queue) {
		ch, err := tb.conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		// The same arguments but x-queue-type: only the type can differ.
		a := args[name]
		a["x-queue-type"] = string(QueueClassic)
		_, err = ch.QueueDeclare(name, true, false, false, false, a)
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed || !strings.Contains(ae.Reason, "x-queue-type") {
			t.Errorf("declaring %s as classic: %v; want PRECONDITION_FAILED on x-queue-type", name, err)
		}
		if !ch.IsClosed() {
			_ = ch.Close()
		}
	}
}

// A topology declared with one type and then with the other fails with a
// MismatchError naming the queue and STEPFLOW_QUEUE_TYPE, both ways.
func TestDeclareTopologyOfTheOtherType(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ first, then QueueType }{
		{QueueClassic, QueueQuorum},
		{QueueQuorum, QueueClassic},
	} {
		t.Run(string(tt.first)+"-then-"+string(tt.then), func(t *testing.T) {
			t.Parallel()
			conn := testenv.RabbitMQ(t)
			q := "jq-" + testenv.RandomHex(8)
			t.Cleanup(func() { testenv.DeleteQueues(t, conn, TopologyQueues(q)...) })
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			if err := (Topology{Queue: q, Type: tt.first}).Declare(ch); err != nil {
				t.Fatalf("declare %s: %v", tt.first, err)
			}
			err = Topology{Queue: q, Type: tt.then}.Declare(ch)
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("declare %s over %s: %v; want a *MismatchError", tt.then, tt.first, err)
			}
			var ae *amqp.Error
			if me.Queue != q || me.Type != tt.then || !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
				t.Errorf("MismatchError{Queue: %q, Type: %q, Err: %v}; want queue %s, type %s, PRECONDITION_FAILED", me.Queue, me.Type, me.Err, q, tt.then)
			}
			for _, want := range []string{"queue " + q + " ", "STEPFLOW_QUEUE_TYPE", "--queue-type", "declared as a " + string(tt.first) + " queue"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// The delay ladder works on quorum queues: a delayed job waits in its
// bucket and comes back to the main queue, due.
func TestQuorumDelay(t *testing.T) {
	t.Parallel()
	tb := setupQuorum(t)
	job := Job{RunID: "r", BlueprintID: "bp", NodeID: "n", Attempt: 1}
	before := time.Now()
	if err := Publish(context.Background(), tb.ch, tb.queue, job, 160*time.Millisecond); err != nil {
		t.Fatalf("Publish delayed: %v", err)
	}
	d := tb.get(tb.queue)
	if waited := time.Since(before); waited < 160*time.Millisecond {
		t.Errorf("delayed job back after %s, want at least its bucket's 160 ms", waited)
	}
	if d.MessageId != job.ID() {
		t.Errorf("got %q, want %q", d.MessageId, job.ID())
	}
	if _, ok := DueIn(d.Headers, time.Now()); !ok {
		t.Errorf("job back from the delay queues without %s: %v", HeaderDue, d.Headers)
	}
}

// A message returned to a quorum main queue more than QuorumDeliveryLimit
// times goes to the dead-letter queue (RabbitMQ does it, with x-death
// reason delivery_limit), where the reconciler records it.
func TestQuorumDeliveryLimit(t *testing.T) {
	t.Parallel()
	tb := setupQuorum(t)
	job := Job{RunID: "r", BlueprintID: "bp", NodeID: "poison", Attempt: 1}
	if err := Publish(context.Background(), tb.ch, tb.queue, job, 0); err != nil {
		t.Fatal(err)
	}
	cons, err := tb.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deliveries, err := cons.Consume(tb.queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= QuorumDeliveryLimit; i++ {
		select {
		case d := <-deliveries:
			if err := d.Nack(false, true); err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery %d did not come", i+1)
		}
	}
	// Dead-lettered, and so not delivered again: once the dead letter is
	// there, nothing waits for this consumer.
	d := tb.get(DeadLetterQueue(tb.queue))
	select {
	case again := <-deliveries:
		t.Fatalf("delivered again after %d returns: %v", QuorumDeliveryLimit+1, again.Headers)
	default:
	}
	if d.MessageId != job.ID() {
		t.Errorf("dead letter %q, want %q", d.MessageId, job.ID())
	}
	if r, _ := HeaderString(d.Headers, "x-first-death-reason"); r != "delivery_limit" {
		t.Errorf("x-first-death-reason %q, want delivery_limit: %v", r, d.Headers)
	}
}

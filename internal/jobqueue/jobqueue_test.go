package jobqueue

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/testenv"
)

// testBundle is one test's topology on the real RabbitMQ, deleted when the
// test ends, and a confirm-mode channel on it.
type testBundle struct {
	t     *testing.T
	conn  *amqp.Connection
	ch    *amqp.Channel
	queue string
}

func setup(t *testing.T) *testBundle {
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
	if err := DeclareTopology(ch, tb.queue); err != nil {
		t.Fatalf("DeclareTopology: %v", err)
	}
	return tb
}

// get takes the next message off q, waiting up to 5s for one.
func (tb *testBundle) get(q string) amqp.Delivery {
	tb.t.Helper()
	return testenv.TakeMessage(tb.t, tb.ch, q, 5*time.Second)
}

// DeclareTopology accepts a main queue that the Flowcraft adapter declared
// (durable, no arguments) and is idempotent.
func TestDeclareTopologyIdempotent(t *testing.T) {
	t.Parallel()
	conn := testenv.RabbitMQ(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := "jq-" + testenv.RandomHex(8)
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
	if err := DeclareTopology(ch, ""); err == nil {
		t.Error("DeclareTopology accepted an empty queue name")
	}
}

// Publish writes a persistent JSON message with the job id as message id,
// straight to the main queue or, delayed, to the right bucket with its due time.
func TestPublish(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := context.Background()
	job := Job{RunID: "r", BlueprintID: "bp", NodeID: "n", Attempt: 2}
	if err := Publish(ctx, tb.ch, tb.queue, job, 0); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	d := tb.get(tb.queue)
	want, _ := json.Marshal(job)
	if string(d.Body) != string(want) || d.MessageId != "r:n:2" || d.ContentType != "application/json" || d.DeliveryMode != amqp.Persistent {
		t.Errorf("published %s id %q ct %q mode %d", d.Body, d.MessageId, d.ContentType, d.DeliveryMode)
	}
	if _, ok := d.Headers[HeaderDue]; ok {
		t.Errorf("undelayed job has %s", HeaderDue)
	}

	before := time.Now()
	if err := Publish(ctx, tb.ch, tb.queue, job, 1500*time.Millisecond); err != nil {
		t.Fatalf("Publish delayed: %v", err)
	}
	d = tb.get(tb.queue + ".delay.1280")
	due, ok := HeaderInt(d.Headers, HeaderDue)
	if !ok {
		t.Fatalf("delayed job has no %s: %v", HeaderDue, d.Headers)
	}
	if at := time.UnixMilli(due); at.Before(before.Add(1499*time.Millisecond)) || at.After(time.Now().Add(1500*time.Millisecond)) {
		t.Errorf("due %s, want publish time + 1.5s", at)
	}

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

func TestDelayRoute(t *testing.T) {
	t.Parallel()
	q := "q"
	for _, tt := range []struct {
		remaining time.Duration
		want      string
	}{
		{0, "q"},
		{9 * time.Millisecond, "q"},
		{10 * time.Millisecond, "q.delay.10"},
		{39 * time.Millisecond, "q.delay.20"},
		{100 * time.Millisecond, "q.delay.80"},
		{200 * time.Millisecond, "q.delay.160"},
		{1500 * time.Millisecond, "q.delay.1280"},
		{10 * time.Second, "q.delay.5120"},
		{24 * time.Hour, "q.delay.83886080"},
		{100 * time.Hour, "q.delay.83886080"},
	} {
		if got := delayRoute(q, tt.remaining); got != tt.want {
			t.Errorf("delayRoute(%s) = %s, want %s", tt.remaining, got, tt.want)
		}
	}
	if got := RedelayRoute(q, 6*time.Millisecond); got != "q.delay.10" {
		t.Errorf("RedelayRoute(6ms) = %s", got)
	}
	if n := len(TopologyQueues(q)); n != 2+delayBucketCount {
		t.Errorf("TopologyQueues: %d queues", n)
	}
}

// Headers are read whatever type the publisher gave them.
func TestHeaderInt(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		v    any
		want int64
		ok   bool
	}{
		{int32(3), 3, true}, {int64(-4), -4, true}, {uint8(5), 5, true}, {float64(6), 6, true},
		{"7", 7, true}, {[]byte("8"), 8, true}, {"x", 0, false}, {nil, 0, false}, {true, 0, false},
	} {
		got, ok := HeaderInt(amqp.Table{"k": tt.v}, "k")
		if got != tt.want || ok != tt.ok {
			t.Errorf("HeaderInt(%#v) = %d, %v; want %d, %v", tt.v, got, ok, tt.want, tt.ok)
		}
	}
	now := time.UnixMilli(1_000_000)
	if d, ok := DueIn(amqp.Table{HeaderDue: int64(1_000_250)}, now); !ok || d != 250*time.Millisecond {
		t.Errorf("DueIn = %s, %v", d, ok)
	}
}

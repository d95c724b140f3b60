package jobqueue

// Delays without a broker plugin (stepflow does not assume RabbitMQ's
// delayed-message exchange): a ladder of TTL "bucket" queues
// <queue>.delay.<ms>, ms = 10·2^k for k = 0..23 (10 ms … ~23 h). Each bucket
// dead-letters expired messages back to the main queue. A delayed message
// carries its due time in x-stepflow-due and goes to the largest bucket not
// longer than the time left; when it comes back early the bridge sends it down
// the ladder again (RedelayRoute) without calling the function. A bucket has
// one TTL and is FIFO, so a message never waits behind a longer delay, and no
// delay holds a worker slot or a prefetch slot.
//
// The queues are classic queues (the default, as the Flowcraft adapter
// declared its queue) or quorum queues (QueueQuorum: replicated, for a
// RabbitMQ cluster). A quorum topology is the same ladder; what differs is
// said at quorumArgs.

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	minDelayBucket   = 10 * time.Millisecond
	delayBucketCount = 24
)

// QueueType is the kind of RabbitMQ queue a topology is made of.
type QueueType string

// Queue types.
const (
	QueueClassic QueueType = "classic"
	QueueQuorum  QueueType = "quorum"
)

// ParseQueueType reads a queue type; "" is classic.
func ParseQueueType(s string) (QueueType, error) {
	switch QueueType(s) {
	case "", QueueClassic:
		return QueueClassic, nil
	case QueueQuorum:
		return QueueQuorum, nil
	}
	return "", fmt.Errorf("queue type %q: want classic or quorum", s)
}

// QuorumDeliveryLimit is the x-delivery-limit of a quorum main queue: a
// message returned to it (nacked with requeue, or held by a consumer
// whose channel died) more often than this is dead-lettered to
// <queue>.dlq by RabbitMQ itself. stepflow's own retries republish, so
// they do not count; what counts is a bridge crashing or handing
// deliveries back (shutdown, a function found down), once per event, so
// only a message that keeps killing its consumers gets near it. Set
// explicitly because RabbitMQ's default changed (none before 4.0, 20
// since).
const QuorumDeliveryLimit = 50

// quorumDLQDeliveryLimit is the dead-letter queue's: the reconciler puts
// a dead letter back only when it could not record it, and a dead letter
// has nowhere further to go, so the limit is far above any outage (and
// RabbitMQ 4's default of 20 would drop one after 20 failed passes).
const quorumDLQDeliveryLimit = 100_000

// DeadLetterQueue names the dead-letter queue of queue.
func DeadLetterQueue(queue string) string { return queue + ".dlq" }

// TopologyQueues lists every queue DeclareTopology declares for queue: the main
// queue, its dead-letter queue and its delay buckets (shortest first). Handy for
// purging or deleting a test queue's whole topology.
func TopologyQueues(queue string) []string {
	names := []string{queue, DeadLetterQueue(queue)}
	for _, d := range delayBuckets() {
		names = append(names, delayQueueName(queue, d))
	}
	return names
}

// Topology is a job queue's set of queues: its name and their type.
type Topology struct {
	Queue string
	Type  QueueType // "" is QueueClassic
}

// DeclareTopology declares, idempotently, the classic topology of queue:
// the durable main queue (with no arguments, as the Flowcraft adapter
// declared it, so an existing queue is accepted), its dead-letter queue
// <queue>.dlq and the delay buckets. It is Topology{Queue: queue}.Declare.
func DeclareTopology(ch *amqp.Channel, queue string) error {
	return Topology{Queue: queue}.Declare(ch)
}

// Declare declares the topology's queues, idempotently. A queue that exists
// with other arguments (another type, say) makes the broker close ch
// (PRECONDITION_FAILED); the error is then a *MismatchError naming the
// queue and the setting.
func (t Topology) Declare(ch *amqp.Channel) error {
	if t.Queue == "" {
		return errors.New("declare topology: queue name is empty")
	}
	typ, err := ParseQueueType(string(t.Type))
	if err != nil {
		return fmt.Errorf("declare topology %s: %w", t.Queue, err)
	}
	declare := func(name string, args amqp.Table) error {
		if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
			return declareError(name, typ, err)
		}
		return nil
	}
	dlq := DeadLetterQueue(t.Queue)
	if err := declare(t.Queue, mainArgs(typ, dlq)); err != nil {
		return err
	}
	if err := declare(dlq, dlqArgs(typ)); err != nil {
		return err
	}
	for _, d := range delayBuckets() {
		if err := declare(delayQueueName(t.Queue, d), delayArgs(typ, t.Queue, d)); err != nil {
			return err
		}
	}
	return nil
}

// quorumArgs are what every queue of a quorum topology has. Quorum queues
// take the same x-message-ttl and dead-letter arguments as classic ones
// (message TTL since RabbitMQ 3.10), so the delay ladder is unchanged;
// dead-lettering (a bucket's expired messages back to the main queue, and
// the main queue's messages over the delivery limit to the DLQ) is
// at-least-once, which RabbitMQ does only for queues that reject
// publishes when full rather than drop their oldest message: a message
// leaves its queue only once the queue it goes to has confirmed it, so an
// expiring delay never loses a job.
func quorumArgs() amqp.Table {
	return amqp.Table{"x-queue-type": string(QueueQuorum)}
}

func mainArgs(typ QueueType, dlq string) amqp.Table {
	if typ != QueueQuorum {
		return nil // as the Flowcraft adapter declared it
	}
	a := quorumArgs()
	a["x-delivery-limit"] = int64(QuorumDeliveryLimit)
	a["x-dead-letter-exchange"] = ""
	a["x-dead-letter-routing-key"] = dlq
	a["x-dead-letter-strategy"] = "at-least-once"
	a["x-overflow"] = "reject-publish"
	return a
}

func dlqArgs(typ QueueType) amqp.Table {
	if typ != QueueQuorum {
		return nil
	}
	a := quorumArgs()
	a["x-delivery-limit"] = int64(quorumDLQDeliveryLimit)
	return a
}

func delayArgs(typ QueueType, queue string, ttl time.Duration) amqp.Table {
	a := amqp.Table{
		"x-message-ttl":             ttl.Milliseconds(),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": queue,
	}
	if typ == QueueQuorum {
		for k, v := range quorumArgs() {
			a[k] = v
		}
		a["x-dead-letter-strategy"] = "at-least-once"
		a["x-overflow"] = "reject-publish"
	}
	return a
}

// MismatchError is a queue that exists with other arguments than the
// topology gives it: declared with the other queue type (or by an older
// stepflow, or by hand). It unwraps to the broker's *amqp.Error
// (PRECONDITION_FAILED).
type MismatchError struct {
	Queue string
	Type  QueueType // the type stepflow declared it with
	Err   error
}

func (e *MismatchError) Error() string {
	other := QueueQuorum
	if e.Type == QueueQuorum {
		other = QueueClassic
	}
	return fmt.Sprintf("queue %s exists with other arguments than stepflow gives a %s queue (%v): it was probably declared as a %s queue; "+
		"set STEPFLOW_QUEUE_TYPE (--queue-type) to the type it has, the same for every component, or move the queues to the new type (docs/operations.md, \"Switching the queue type\")",
		e.Queue, e.Type, e.Err, other)
}

func (e *MismatchError) Unwrap() error { return e.Err }

func declareError(name string, typ QueueType, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		return &MismatchError{Queue: name, Type: typ, Err: err}
	}
	return fmt.Errorf("declare queue %s: %w", name, err)
}

// delayBuckets returns the bucket TTLs, shortest first.
func delayBuckets() []time.Duration {
	out := make([]time.Duration, delayBucketCount)
	for k := range out {
		out[k] = minDelayBucket << k
	}
	return out
}

func delayQueueName(queue string, ttl time.Duration) string {
	return queue + ".delay." + strconv.FormatInt(ttl.Milliseconds(), 10)
}

// delayRoute picks the queue for a message with remaining time to wait: the
// largest bucket not longer than remaining, or the main queue when remaining is
// below the smallest bucket.
func delayRoute(queue string, remaining time.Duration) string {
	if remaining < minDelayBucket {
		return queue
	}
	buckets := delayBuckets()
	best := buckets[0]
	for _, d := range buckets {
		if d > remaining {
			break
		}
		best = d
	}
	return delayQueueName(queue, best)
}

// RedelayRoute is the queue for a message that came back before it is due,
// with remaining time to wait: the largest bucket not longer than remaining,
// and under the smallest bucket still the smallest bucket: going straight to
// the main queue would spin the message through the consumer until it is
// due; the bucket makes it at most one smallest bucket late instead.
func RedelayRoute(queue string, remaining time.Duration) string {
	return delayRoute(queue, max(remaining, minDelayBucket))
}

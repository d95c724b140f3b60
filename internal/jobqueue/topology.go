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

// DeclareTopology declares, idempotently, the durable main queue (with no
// arguments, as the Flowcraft adapter declared it, so an existing queue is
// accepted), its dead-letter queue <queue>.dlq and the delay buckets.
// A declaration that conflicts with an existing queue closes ch (AMQP
// PRECONDITION_FAILED); the error names the queue.
func DeclareTopology(ch *amqp.Channel, queue string) error {
	if queue == "" {
		return errors.New("declare topology: queue name is empty")
	}
	for _, name := range []string{queue, DeadLetterQueue(queue)} {
		if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare queue %s: %w", name, err)
		}
	}
	for _, d := range delayBuckets() {
		name := delayQueueName(queue, d)
		args := amqp.Table{
			"x-message-ttl":             d.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": queue,
		}
		if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare delay queue %s: %w", name, err)
		}
	}
	return nil
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

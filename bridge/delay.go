package bridge

// Delays without a broker plugin (RabbitMQ 3.10 has no delayed-message exchange
// here): a ladder of TTL "bucket" queues <queue>.delay.<ms>, ms = 10·2^k for
// k = 0..23 (10 ms … ~23 h). Each bucket dead-letters expired messages back to
// the main queue. A delayed message carries its due time in x-stepflow-due and
// goes to the largest bucket not longer than the time left; when it comes back
// early the consumer sends it down the ladder again without calling the function.
// A bucket has one TTL and is FIFO, so a message never waits behind a longer
// delay, and no delay holds a worker slot or a prefetch slot.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQP headers the bridge reads and writes.
const (
	HeaderDue          = "x-stepflow-due"   // unix ms when a delayed message is due
	HeaderAttempts     = "x-attempts"       // transport attempts already made
	HeaderFirstFailure = "x-first-failure"  // RFC 3339 time of the first failed attempt
	HeaderErrorCode    = "x-error-code"     // dead letters: HTTP status or a Code* constant
	HeaderErrorReason  = "x-error-reason"   // dead letters: response body or error text, ≤ 1 KB
	HeaderTraceparent  = "traceparent"      // W3C trace context, passed on to the function
	HeaderDeadLetterID = "x-dead-letter-id" // dead letters: unique id, so recording one is idempotent
)

const (
	minDelayBucket   = 10 * time.Millisecond
	delayBucketCount = 24
)

// ErrNacked is returned when a publish is not confirmed: the broker nacked it,
// or the channel closed before the confirm arrived.
var ErrNacked = errors.New("publish not confirmed (broker nack or channel closed)")

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

// redelayRoute is delayRoute for a message that came back early (more than
// earlyTolerance before it is due). Under the smallest bucket it still uses the
// smallest bucket: going straight to the main queue would spin the message
// through the consumer until it is due; the bucket makes it at most one
// smallest bucket late instead.
func redelayRoute(queue string, remaining time.Duration) string {
	return delayRoute(queue, max(remaining, minDelayBucket))
}

// dueIn reads x-stepflow-due and returns how long until it, and whether the
// header is present.
func dueIn(h amqp.Table, now time.Time) (time.Duration, bool) {
	ms, ok := headerInt(h, HeaderDue)
	if !ok {
		return 0, false
	}
	return time.UnixMilli(ms).Sub(now), true
}

// sendDelayed publishes msg to queue's topology so that it is delivered from
// queue after delay: it sets (or, for no delay, removes) x-stepflow-due and
// routes the message to a bucket or the main queue. It does not wait for the
// confirm. msg.Headers is not modified.
func sendDelayed(ctx context.Context, ch *amqp.Channel, queue string, msg amqp.Publishing, delay time.Duration, now time.Time) (*amqp.DeferredConfirmation, error) {
	headers := maps.Clone(msg.Headers)
	if headers == nil {
		headers = amqp.Table{}
	}
	route := queue
	if delay > 0 {
		headers[HeaderDue] = now.Add(delay).UnixMilli()
		route = delayRoute(queue, delay)
	} else {
		delete(headers, HeaderDue)
	}
	msg.Headers = headers
	return send(ctx, ch, route, msg)
}

// send publishes msg to the named queue through the default exchange. ch must
// be in confirm mode.
func send(ctx context.Context, ch *amqp.Channel, route string, msg amqp.Publishing) (*amqp.DeferredConfirmation, error) {
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", route, false, false, msg)
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", route, err)
	}
	if dc == nil {
		return nil, fmt.Errorf("publish to %s: channel is not in confirm mode", route)
	}
	return dc, nil
}

// waitConfirm waits for the broker's confirm of one publish.
func waitConfirm(ctx context.Context, dc *amqp.DeferredConfirmation) error {
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("wait for publish confirm: %w", err)
	}
	if !acked {
		return ErrNacked
	}
	return nil
}

// headerInt reads an integer header whatever integer (or decimal string) type
// the publisher used.
func headerInt(h amqp.Table, key string) (int64, bool) {
	switch v := h[key].(type) {
	case int:
		return int64(v), true
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint64:
		return int64(v), true
	case float32:
		return int64(v), true
	case float64:
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	case []byte:
		n, err := strconv.ParseInt(string(v), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// headerString reads a string header (AMQP long strings arrive as string or
// []byte depending on the publisher).
func headerString(h amqp.Table, key string) (string, bool) {
	switch v := h[key].(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

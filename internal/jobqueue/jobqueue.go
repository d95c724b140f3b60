// Package jobqueue is the job queue on RabbitMQ: the message a job is (a
// wire.Job as persistent JSON, its id as message id), the headers the
// bridge reads and writes on it, the queue's topology (the main queue, its
// dead-letter queue and the TTL delay buckets) and Publish, the one way to
// enqueue a job. The bridge, the client and the reconciler all enqueue
// through it, so that every job on the queue carries the same message id,
// properties and delay headers. See docs/contract.md.
//
// It imports the AMQP client, internal/wire and internal/telemetry only;
// it knows jobs as messages, never how they run.
package jobqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/telemetry"
	"github.com/stepflow/stepflow/internal/wire"
)

// DefaultQueue is the Flowcraft adapter's job queue.
const DefaultQueue = "flowcraft-jobs"

// Job is the message body of one workflow step (see internal/wire), compatible
// with the Flowcraft adapter's JobPayload. Its ID, "runId:nodeId:attempt", is
// the AMQP message id and the CloudEvent id, stable across redeliveries.
type Job = wire.Job

// NewJob is wire.NewJob: the job of step stepKey of node nodeID.
func NewJob(runID, blueprintID, nodeID, stepKey string, attempt int) Job {
	return wire.NewJob(runID, blueprintID, nodeID, stepKey, attempt)
}

// AMQP headers of a job message.
const (
	HeaderDue          = "x-stepflow-due"   // unix ms when a delayed message is due
	HeaderAttempts     = "x-attempts"       // transport attempts already made
	HeaderFirstFailure = "x-first-failure"  // RFC 3339 time of the first failed attempt
	HeaderErrorCode    = "x-error-code"     // dead letters: HTTP status or a bridge error code
	HeaderErrorReason  = "x-error-reason"   // dead letters: response body or error text, ≤ 1 KB
	HeaderTraceparent  = "traceparent"      // W3C trace context, passed on to the function
	HeaderDeadLetterID = "x-dead-letter-id" // dead letters: unique id, so recording one is idempotent
)

// ErrNacked is returned when a publish is not confirmed: the broker nacked it,
// or the channel closed before the confirm arrived.
var ErrNacked = errors.New("publish not confirmed (broker nack or channel closed)")

// Publish enqueues job on queue, delivered after delay (0: now), and waits for
// the broker's confirm. ch must be in confirm mode (Channel.Confirm) and the
// topology declared (DeclareTopology); the message is persistent JSON with
// message id job.ID() and the trace context of ctx, if any.
func Publish(ctx context.Context, ch *amqp.Channel, queue string, job Job, delay time.Duration) error {
	var headers amqp.Table
	if tp := telemetry.Traceparent(ctx); tp != "" {
		headers = amqp.Table{HeaderTraceparent: tp}
	}
	dc, err := SendJob(ctx, ch, queue, job, delay, headers)
	if err != nil {
		return err
	}
	if err := WaitConfirm(ctx, dc); err != nil {
		return fmt.Errorf("publish job %s: %w", job.ID(), err)
	}
	return nil
}

// SendJob publishes job as Publish does, without waiting for the confirm, so
// that several jobs (a reply's) can be confirmed together. headers (may be
// nil) are added to the message.
func SendJob(ctx context.Context, ch *amqp.Channel, queue string, job Job, delay time.Duration, headers amqp.Table) (*amqp.DeferredConfirmation, error) {
	if err := job.Validate(); err != nil {
		return nil, fmt.Errorf("publish job %s: %w", job.ID(), err)
	}
	body, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("publish job %s: %w", job.ID(), err)
	}
	now := time.Now()
	msg := amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    job.ID(),
		Timestamp:    now,
		Headers:      headers,
		Body:         body,
	}
	dc, err := SendDelayed(ctx, ch, queue, msg, delay, now)
	if err != nil {
		return nil, fmt.Errorf("publish job %s: %w", job.ID(), err)
	}
	return dc, nil
}

// SendDelayed publishes msg to queue's topology so that it is delivered from
// queue after delay: it sets (or, for no delay, removes) x-stepflow-due and
// routes the message to a bucket or the main queue. It does not wait for the
// confirm. msg.Headers is not modified.
func SendDelayed(ctx context.Context, ch *amqp.Channel, queue string, msg amqp.Publishing, delay time.Duration, now time.Time) (*amqp.DeferredConfirmation, error) {
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
	return Send(ctx, ch, route, msg)
}

// Send publishes msg to the named queue through the default exchange, without
// waiting for the confirm. ch must be in confirm mode.
func Send(ctx context.Context, ch *amqp.Channel, route string, msg amqp.Publishing) (*amqp.DeferredConfirmation, error) {
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", route, false, false, msg)
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", route, err)
	}
	if dc == nil {
		return nil, fmt.Errorf("publish to %s: channel is not in confirm mode", route)
	}
	return dc, nil
}

// WaitConfirm waits for the broker's confirm of one publish.
func WaitConfirm(ctx context.Context, dc *amqp.DeferredConfirmation) error {
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("wait for publish confirm: %w", err)
	}
	if !acked {
		return ErrNacked
	}
	return nil
}

// DueIn reads x-stepflow-due and returns how long until it, and whether the
// header is present.
func DueIn(h amqp.Table, now time.Time) (time.Duration, bool) {
	ms, ok := HeaderInt(h, HeaderDue)
	if !ok {
		return 0, false
	}
	return time.UnixMilli(ms).Sub(now), true
}

// HeaderInt reads an integer header whatever integer (or decimal string) type
// the publisher used.
func HeaderInt(h amqp.Table, key string) (int64, bool) {
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

// HeaderString reads a string header (AMQP long strings arrive as string or
// []byte depending on the publisher).
func HeaderString(h amqp.Table, key string) (string, bool) {
	switch v := h[key].(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

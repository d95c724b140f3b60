package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/stepflow/stepflow/internal/telemetry"
	"github.com/stepflow/stepflow/internal/wire"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Job is the message body of one workflow step (see internal/wire), compatible
// with the Flowcraft adapter's JobPayload. Its ID, "runId:nodeId:attempt", is
// the AMQP message id and the CloudEvent id, stable across redeliveries.
type Job = wire.Job

// peekJob reads a delivery body leniently, only to name the job in ids, the
// CloudEvent subject and logs; a body that does not parse gives the zero Job.
// Whether a body is acceptable is the function's call (it answers 400), never
// the bridge's.
func peekJob(body []byte) Job {
	var j Job
	if err := json.Unmarshal(body, &j); err != nil {
		return Job{}
	}
	return j
}

// deliveryJobID names a delivery: its message id when it has one (stepflow
// publishers set it), else the id computed from the body (Flowcraft clients
// publish without one), else a sha256 of a body that does not parse.
func deliveryJobID(messageID string, body []byte) string {
	if messageID != "" {
		return messageID
	}
	if j := peekJob(body); j.RunID != "" && j.NodeID != "" {
		return j.ID()
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// Publish enqueues job on queue, delivered after delay (0: now), and waits for
// the broker's confirm. ch must be in confirm mode (Channel.Confirm) and the
// topology declared (DeclareTopology); the message is persistent JSON with
// message id job.ID(). Clients, the reconciler and the bridge all enqueue jobs
// through here.
func Publish(ctx context.Context, ch *amqp.Channel, queue string, job Job, delay time.Duration) error {
	var headers amqp.Table
	if tp := telemetry.Traceparent(ctx); tp != "" {
		headers = amqp.Table{HeaderTraceparent: tp}
	}
	dc, err := sendJob(ctx, ch, queue, job, delay, headers)
	if err != nil {
		return err
	}
	if err := waitConfirm(ctx, dc); err != nil {
		return fmt.Errorf("publish job %s: %w", job.ID(), err)
	}
	return nil
}

// sendJob publishes job without waiting for the confirm, so that a reply's jobs
// can be confirmed together. headers (may be nil) are added to the message.
func sendJob(ctx context.Context, ch *amqp.Channel, queue string, job Job, delay time.Duration, headers amqp.Table) (*amqp.DeferredConfirmation, error) {
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
	dc, err := sendDelayed(ctx, ch, queue, msg, delay, now)
	if err != nil {
		return nil, fmt.Errorf("publish job %s: %w", job.ID(), err)
	}
	return dc, nil
}

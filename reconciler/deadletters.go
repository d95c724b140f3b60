package reconciler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
)

// MaxDeadLettersPerPass bounds how many dead letters one pass records.
const MaxDeadLettersPerPass = 1000

// IngestDeadLetters moves the dead-letter queue into PostgreSQL: each
// message is recorded (idempotently) with its reason, its run is failed
// with that reason instead of waiting to be republished forever, and the
// message is acked. `stepflow dlq list` and `stepflow dlq replay` work
// from the recorded rows. It returns how many it recorded and how many
// runs it failed.
func (r *Reconciler) IngestDeadLetters(ctx context.Context) (recorded, failedRuns int, err error) {
	if r.o.Channel == nil {
		return 0, 0, nil
	}
	ch, err := r.o.Channel()
	if err != nil {
		return 0, 0, err
	}
	dlq := jobqueue.DeadLetterQueue(r.o.Queue)
	for recorded < MaxDeadLettersPerPass && ctx.Err() == nil {
		d, ok, err := ch.Get(dlq, false)
		if err != nil {
			return recorded, failedRuns, fmt.Errorf("read %s: %w", dlq, err)
		}
		if !ok {
			break
		}
		dl := deadLetterFrom(d)
		inserted, failed, err := r.o.Store.RecordDeadLetter(ctx, dl)
		if err != nil {
			_ = d.Nack(false, true)
			return recorded, failedRuns, err
		}
		if err := d.Ack(false); err != nil {
			return recorded, failedRuns, fmt.Errorf("ack dead letter: %w", err)
		}
		if inserted {
			recorded++
		}
		if failed {
			failedRuns++
			r.o.Logger.Warn("run failed: its job was dead-lettered", "run_id", dl.RunID, "node_id", dl.NodeID, "code", dl.Code, "reason", dl.Reason)
		}
	}
	return recorded, failedRuns, nil
}

func deadLetterFrom(d amqp.Delivery) store.DeadLetter {
	dl := store.DeadLetter{MessageID: d.MessageId, Body: d.Body, Headers: map[string]any{}}
	for k, v := range d.Headers {
		dl.Headers[k] = headerValue(v)
	}
	dl.DeadLetterID, _ = d.Headers[jobqueue.HeaderDeadLetterID].(string)
	if dl.DeadLetterID == "" {
		// Dead-lettered by something else: name it by its content.
		h := sha256.New()
		h.Write(d.Body)
		fmt.Fprint(h, d.MessageId, d.Headers[jobqueue.HeaderFirstFailure], d.Timestamp)
		dl.DeadLetterID = "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	dl.Code = fmt.Sprint(headerValue(d.Headers[jobqueue.HeaderErrorCode]))
	dl.Reason = fmt.Sprint(headerValue(d.Headers[jobqueue.HeaderErrorReason]))
	if dl.Code == "<nil>" {
		dl.Code = ""
	}
	if dl.Reason == "<nil>" {
		dl.Reason = ""
	}
	if dl.Code == "" {
		// Dead-lettered by RabbitMQ itself, not by a bridge: a quorum
		// queue's delivery limit, say.
		if why, ok := jobqueue.HeaderString(d.Headers, "x-first-death-reason"); ok {
			from, _ := jobqueue.HeaderString(d.Headers, "x-first-death-queue")
			dl.Code = why
			if dl.Reason == "" {
				dl.Reason = fmt.Sprintf("dead-lettered by RabbitMQ from queue %s (%s)", from, why)
			}
		}
	}
	switch n := d.Headers[jobqueue.HeaderAttempts].(type) {
	case int32:
		dl.Attempts = int(n)
	case int64:
		dl.Attempts = int(n)
	case int:
		dl.Attempts = n
	}
	if s, ok := d.Headers[jobqueue.HeaderFirstFailure].(string); ok {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			dl.FirstFailure = &t
		}
	}
	var job jobqueue.Job
	if json.Unmarshal(d.Body, &job) == nil {
		dl.RunID, dl.NodeID, dl.BlueprintID, dl.JobAttempt = clean(job.RunID), clean(job.Key()), clean(job.BlueprintID), job.Attempt
	}
	dl.MessageID, dl.Code, dl.Reason, dl.DeadLetterID = clean(dl.MessageID), clean(dl.Code), clean(dl.Reason), clean(dl.DeadLetterID)
	return dl
}

// clean makes a poison message's text storable: PostgreSQL text holds no
// NUL byte and only valid UTF-8.
func clean(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
}

// headerValue turns an AMQP header value into something JSON can hold.
func headerValue(v any) any {
	switch x := v.(type) {
	case string:
		return clean(x)
	case nil, bool, int32, int64, float32, float64, int:
		return x
	case []byte:
		return clean(string(x))
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case amqp.Table:
		m := map[string]any{}
		for k, vv := range x {
			m[k] = headerValue(vv)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, vv := range x {
			out[i] = headerValue(vv)
		}
		return out
	}
	return fmt.Sprint(v)
}

package bridge

import (
	"context"
	"log/slog"
	"maps"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/telemetry"
)

// publishTimeout bounds publishing a decision (reply jobs, a retry, a dead
// letter, a redelay) and waiting for its confirms; past it the delivery is
// requeued (publishFailed).
const publishTimeout = 30 * time.Second

// carryOut executes a batch's decisions: it publishes everything they ask
// for, pipelined on the confirm channel, then waits for all the confirms,
// then settles each delivery as its decision says, or requeues it
// (publishFailed) when its own publishes were not confirmed.
func (b *Bridge) carryOut(ctx context.Context, s *channels, ds []*delivery) {
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	plan := b.planHandOn(ctx, s, ds)
	now := time.Now()
	for _, d := range ds {
		if d.direct && d.dec.Kind != KindPublish {
			continue // a job handed on publishes only its successors; its copy carries the rest
		}
		d.dcs, d.pubErr = b.publishFor(pctx, s, d, now)
	}
	if plan != nil {
		// Published, not yet confirmed: the copies are in the broker's
		// hands, and each parent waits below for its confirms as before.
		b.startHandOn(ctx, s, plan)
	}
	start := time.Now()
	waited := false
	for _, d := range ds {
		if d.pubErr != nil {
			continue
		}
		for _, dc := range d.dcs {
			if d.pubErr = jobqueue.WaitConfirm(pctx, dc); d.pubErr != nil {
				break
			}
		}
		waited = waited || len(d.dcs) > 0
	}
	if waited {
		b.metrics.confirm.Observe(time.Since(start).Seconds())
	}
	for _, d := range ds {
		if d.direct {
			b.handOnDecided(d)
			continue
		}
		dec, log := d.dec, d.log
		if d.pubErr != nil {
			log.Error("publishing for a delivery failed; requeueing it", "decision", dec.Kind.String(), "err", d.pubErr)
			dec = publishFailed(d.pubErr)
		}
		if d.status != 0 {
			log = log.With("status", d.status)
		}
		b.settle(d.d, log, dec)
	}
}

// publishFor publishes what d's decision asks for, without waiting for the
// confirms: the reply's jobs, a delayed retry, or a dead letter.
func (b *Bridge) publishFor(ctx context.Context, s *channels, d *delivery, now time.Time) ([]*amqp.DeferredConfirmation, error) {
	var dcs []*amqp.DeferredConfirmation
	switch dec := d.dec; dec.Kind {
	case KindPublish:
		var headers amqp.Table
		if tp := replyTraceparent(d); tp != "" {
			headers = amqp.Table{jobqueue.HeaderTraceparent: tp} // the next steps continue the trace
		}
		for i, j := range dec.Jobs {
			h := headers
			if d.handedOn[i] {
				h = maps.Clone(headers)
				if h == nil {
					h = amqp.Table{}
				}
				h[headerHandedOn] = b.instance // the copy of a job handed on (handon.go)
			}
			for range max(1, b.cfg.PublishCopies) {
				dc, err := jobqueue.SendJob(ctx, s.pub, b.cfg.Queue, j.Job, time.Duration(j.DelayMs)*time.Millisecond, h)
				if err != nil {
					return nil, err
				}
				dcs = append(dcs, dc)
			}
		}
	case KindRetry:
		msg := republishing(d.d)
		msg.Headers[jobqueue.HeaderAttempts] = int32(d.attempt)
		if _, ok := msg.Headers[jobqueue.HeaderFirstFailure]; !ok {
			msg.Headers[jobqueue.HeaderFirstFailure] = now.UTC().Format(time.RFC3339)
		}
		dc, err := jobqueue.SendDelayed(ctx, s.pub, b.cfg.Queue, msg, dec.Delay, now)
		if err != nil {
			return nil, err
		}
		dcs = append(dcs, dc)
	case KindDeadLetter:
		msg := republishing(d.d)
		msg.Headers[jobqueue.HeaderDeadLetterID] = uuid.NewString()
		msg.Headers[jobqueue.HeaderErrorCode] = dec.Code
		msg.Headers[jobqueue.HeaderErrorReason] = dec.Reason
		msg.Headers[jobqueue.HeaderAttempts] = int32(d.attempt)
		if _, ok := msg.Headers[jobqueue.HeaderFirstFailure]; !ok {
			msg.Headers[jobqueue.HeaderFirstFailure] = now.UTC().Format(time.RFC3339)
		}
		dc, err := jobqueue.Send(ctx, s.pub, jobqueue.DeadLetterQueue(b.cfg.Queue), msg)
		if err != nil {
			return nil, err
		}
		dcs = append(dcs, dc)
	}
	return dcs, nil
}

// replyTraceparent is the trace context d's reply jobs carry: its span's,
// else what its delivery came with.
func replyTraceparent(d *delivery) string {
	if tp := telemetry.Traceparent(d.ctx); tp != "" {
		return tp
	}
	tp, _ := jobqueue.HeaderString(d.d.Headers, jobqueue.HeaderTraceparent)
	return tp
}

// settle acks or nacks d as dec says, counts the outcome and logs it.
func (b *Bridge) settle(d amqp.Delivery, log *slog.Logger, dec Decision) {
	if log == nil {
		job := peekJob(d.Body)
		log = b.log.With("job_id", deliveryJobID(d.MessageId, d.Body), "run_id", job.RunID, "node_id", job.NodeID)
	}
	var outcome string
	var err error
	level := slog.LevelDebug
	if dec.Kind == KindRequeue {
		outcome = outcomeRequeued
		level = slog.LevelInfo
		err = d.Nack(false, true)
	} else {
		switch dec.Kind {
		case KindPublish:
			outcome = outcomeReplyPublished
		case KindAck:
			outcome = outcomeAck
		case KindRetry:
			outcome, level = outcomeRetried, slog.LevelInfo
		case KindDeadLetter:
			outcome, level = outcomeDeadLettered, slog.LevelWarn
		case KindRedelay:
			outcome = outcomeRedelayed
		case KindAckCopy:
			outcome = outcomeHandedOnCopy
		}
		err = d.Ack(false)
	}
	if err != nil {
		// The delivery's channel is gone; the broker redelivers the message.
		log.Warn("could not settle delivery; the broker will redeliver it", "decision", dec.Kind.String(), "err", err)
		outcome = outcomeRequeued
	}
	b.metrics.deliveries.WithLabelValues(outcome).Inc()
	attrs := []any{"outcome", outcome}
	if dec.Code != "" {
		attrs = append(attrs, "code", dec.Code)
	}
	if dec.Reason != "" {
		attrs = append(attrs, "reason", dec.Reason)
	}
	if dec.Kind == KindRetry {
		attrs = append(attrs, "delay", dec.Delay)
	}
	if dec.Kind == KindPublish {
		attrs = append(attrs, "jobs", len(dec.Jobs))
	}
	log.Log(context.Background(), level, "delivery settled", attrs...)
}

// redelay carries out an early delivery's KindRedelay: it sends the delivery
// further down the delay ladder, without calling the function, then settles
// it.
func (b *Bridge) redelay(ctx context.Context, s *channels, d amqp.Delivery, dec Decision) {
	defer b.wg.Done()
	b.metrics.inflight.Inc()
	defer b.metrics.inflight.Dec()

	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	msg := republishing(d) // keeps x-stepflow-due
	start := time.Now()
	if _, ok := msg.Headers[jobqueue.HeaderDue]; !ok {
		// Not yet delayed (the copy of a job another bridge handed on):
		// due after dec.Delay, so that it is sent when it comes back.
		msg.Headers[jobqueue.HeaderDue] = start.Add(dec.Delay).UnixMilli()
	}
	dc, err := jobqueue.Send(pctx, s.pub, jobqueue.RedelayRoute(b.cfg.Queue, dec.Delay), msg)
	if err == nil {
		err = jobqueue.WaitConfirm(pctx, dc)
		b.metrics.confirm.Observe(time.Since(start).Seconds())
	}
	job := peekJob(d.Body)
	log := b.log.With("job_id", deliveryJobID(d.MessageId, d.Body), "run_id", job.RunID, "node_id", job.NodeID, "due_in", dec.Delay)
	if err != nil {
		log.Error("redelay failed; requeueing", "err", err)
		dec = publishFailed(err)
	}
	b.settle(d, log, dec)
}

// republishing copies a delivery into a message to publish again: same body,
// properties, message id and headers (the headers map is a copy). It is always
// persistent; Expiration is dropped so that only the delay buckets' TTL applies.
func republishing(d amqp.Delivery) amqp.Publishing {
	headers := maps.Clone(d.Headers)
	if headers == nil {
		headers = amqp.Table{}
	}
	return amqp.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}

package bridge

import (
	"context"
	"fmt"
	"log/slog"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/telemetry"
	"github.com/stepflow/stepflow/internal/wire"
)

// delivery is one delivery of a batch being handled.
type delivery struct {
	d       amqp.Delivery
	job     wire.Job // as far as the body parses
	jobID   string
	attempt int // this transport attempt, 1-based
	log     *slog.Logger
	ctx     context.Context // carries the delivery's span
	span    trace.Span

	dec    Decision
	status int                          // the status the job was answered with, 0 for none
	dcs    []*amqp.DeferredConfirmation // what carrying dec out published
	pubErr error                        // carrying dec out failed: requeue instead
	direct bool                         // a job handed on (handon.go): no delivery to settle
	// handedOn: the indexes of dec.Jobs handed on (handon.go), whose
	// publishes carry headerHandedOn.
	handedOn map[int]bool
}

// handle runs one request slot's batch: POST it (a lone delivery alone in
// binary mode, else as a CloudEvents batch), decide for each delivery,
// carry the decisions out. The one-event form costs less to encode and
// decode on both sides, which shows on a lone job's latency. A batch the
// function refuses as a batch (batchRefusal) is not decided on: its
// deliveries go again one by one (resend).
func (b *Bridge) handle(ctx context.Context, s *channels, batch []amqp.Delivery) {
	ds := make([]*delivery, len(batch))
	for i, d := range batch {
		ds[i] = b.begin(ctx, d, len(batch))
	}
	b.run(ctx, s, ds)
}

// run is handle's work on deliveries begun (or jobs handed on, handon.go),
// in the request slot taken for them, which it gives back.
func (b *Bridge) run(ctx context.Context, s *channels, ds []*delivery) {
	defer b.wg.Done()
	defer func() { <-b.sem }()
	n := float64(len(ds))
	b.metrics.inflight.Add(n)
	defer b.metrics.inflight.Sub(n)
	b.metrics.batchSize.Observe(n)
	defer func() {
		for _, d := range ds {
			d.span.End()
		}
	}()

	if len(ds) == 1 {
		d := ds[0]
		reply := b.call(d.ctx, d.d, d.jobID, d.job, d.attempt)
		d.dec, d.status = b.policy.Decide(reply), reply.Status
	} else {
		reply := b.callBatch(ctx, ds)
		if resend, stop := batchRefusal(reply); resend {
			b.refused(reply, len(ds), stop)
			b.resend(ctx, s, ds)
			return
		}
		jobs := make([]BatchJob, len(ds))
		for i, d := range ds {
			jobs[i] = BatchJob{ID: d.jobID, Attempt: d.attempt}
		}
		for i, bd := range b.policy.DecideBatch(reply, jobs) {
			ds[i].dec, ds[i].status = bd.Decision, bd.Status
		}
	}
	b.carryOut(ctx, s, ds)
}

// refused notes that the function answered a batch of n deliveries with
// reply as a whole, refusing it as a batch; with stop, it sends no more
// batches, which it says once, at warn level, with the fix.
func (b *Bridge) refused(reply Reply, n int, stop bool) {
	reason := statusReason(reply)
	if !stop {
		b.log.Warn(fmt.Sprintf("the step function refused a CloudEvents batch of %d jobs as too large (HTTP %d: %s); sending its jobs one per request", n, reply.Status, reason),
			"status", reply.Status, "batch_size", n)
		return
	}
	if b.noBatches.CompareAndSwap(false, true) {
		b.metrics.batchesRefused.Set(1)
		b.log.Warn(fmt.Sprintf("the step function refused a CloudEvents batch (HTTP %d: %s); sending one job per request from now on — set BRIDGE_BATCH_SIZE=1 for a function that takes no batches", reply.Status, reason),
			"status", reply.Status, "batch_size", n)
	}
}

// resend sends each delivery of a refused batch again, at once, in the
// one-event form, as a lone delivery goes (with its own delivery attempt:
// the refused request was no attempt at the job), decides on its own reply
// and carries that out before sending the next. One by one, in the request
// slot the batch held, so that no more than Concurrency requests are ever
// in flight: a function that takes no batches is typically one built with
// func build, which serves one request per instance, and a burst of
// BatchSize requests per slot would only be queued there, time out and be
// retried. Carrying each decision out at once lets a job's successors go
// without waiting for the rest of the batch. A shutdown past the grace
// cancels ctx: the call fails and the delivery is requeued. Once the
// session is lost the deliveries left cannot be settled (the broker
// redelivers them), so they are not sent (connectionLost).
func (b *Bridge) resend(ctx context.Context, s *channels, ds []*delivery) {
	for _, d := range ds {
		select {
		case <-s.lost:
			d.dec, d.status = connectionLost(), 0
			b.carryOut(ctx, s, []*delivery{d})
			continue
		default:
		}
		b.metrics.batchSize.Observe(1)
		reply := b.call(d.ctx, d.d, d.jobID, d.job, d.attempt)
		d.dec, d.status = b.policy.Decide(reply), reply.Status
		b.carryOut(ctx, s, []*delivery{d})
	}
}

// begin names a delivery for logs and starts its span.
func (b *Bridge) begin(ctx context.Context, d amqp.Delivery, batchSize int) *delivery {
	job := peekJob(d.Body)
	jobID := deliveryJobID(d.MessageId, d.Body)
	made, _ := jobqueue.HeaderInt(d.Headers, jobqueue.HeaderAttempts)
	attempt := int(max(made, 0)) + 1
	log := b.log.With("job_id", jobID, "run_id", job.RunID, "node_id", job.NodeID,
		"attempt", max(job.Attempt, 1), "delivery_attempt", attempt)
	if b.cfg.BatchSize > 1 {
		log = log.With("batch_size", batchSize)
	}

	// Continue the run's trace: the delivery's traceparent is the parent,
	// and the function call and the next jobs carry this span's context.
	// A span per delivery, also in a batch, keeps every run's trace whole.
	ctx = telemetry.Extract(ctx, telemetry.AMQPCarrier(d.Headers))
	ctx, span := telemetry.Tracer().Start(ctx, "stepflow.bridge.deliver", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("stepflow.run_id", job.RunID), attribute.String("stepflow.node_id", job.NodeID),
			attribute.Int("stepflow.attempt", max(job.Attempt, 1)), attribute.Int("stepflow.delivery_attempt", attempt),
			attribute.Int("stepflow.batch_size", batchSize),
			attribute.String("messaging.destination.name", b.cfg.Queue)))
	return &delivery{d: d, job: job, jobID: jobID, attempt: attempt, log: log, ctx: ctx, span: span}
}

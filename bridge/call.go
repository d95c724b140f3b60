package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/telemetry"
	"github.com/stepflow/stepflow/internal/wire"
)

// maxErrorBodyBytes: how much of a non-2xx reply body is read (the reason
// keeps MaxReasonBytes of it).
const maxErrorBodyBytes = 64 << 10

// jobEvent is the CloudEvent of one delivery, and the traceparent it carries
// ("" when none is known).
func (b *Bridge) jobEvent(ctx context.Context, d amqp.Delivery, jobID string, job wire.Job) (event.Event, string) {
	ev := event.New()
	ev.SetID(jobID)
	ev.SetType(EventTypeJob)
	ev.SetSource(b.cfg.Queue)
	if job.RunID != "" {
		ev.SetSubject(job.RunID)
	}
	_ = ev.SetData("application/json", d.Body) // []byte is passed through unchanged
	tp := telemetry.Traceparent(ctx)
	if tp == "" {
		tp, _ = jobqueue.HeaderString(d.Headers, jobqueue.HeaderTraceparent) // pass through what came in
	}
	if tp != "" {
		// The function sees the event, not the HTTP request: the trace
		// context travels as the CloudEvents distributed-tracing extension.
		ev.SetExtension(jobqueue.HeaderTraceparent, tp)
	}
	return ev, tp
}

// call POSTs the delivery to the function as a binary-mode CloudEvent and reads
// the reply. Transport failures come back in Reply.Err.
func (b *Bridge) call(ctx context.Context, d amqp.Delivery, jobID string, job wire.Job, attempt int) (r Reply) {
	r.Attempt = attempt
	ev, tp := b.jobEvent(ctx, d, jobID, job)

	reqCtx, done := b.request(ctx, &r)
	defer done()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, b.cfg.FunctionURL, nil)
	if err == nil {
		err = cehttp.WriteRequest(reqCtx, binding.ToMessage(&ev), req)
	}
	if err != nil {
		r.Err = fmt.Errorf("build request: %w", err)
		return r
	}
	req.Header.Set("X-Delivery-Attempt", strconv.Itoa(attempt))
	if tp != "" {
		req.Header.Set(jobqueue.HeaderTraceparent, tp)
	}
	b.do(req, &r)
	return r
}

// request starts one call to the function: its context, bounded by
// RequestTimeout, and done, which records its duration and, in r, when it
// ended, whether the bridge's own shutdown cut it short and whether the
// bridge has judged the function down (noteCall).
func (b *Bridge) request(ctx context.Context, r *Reply) (context.Context, func()) {
	reqCtx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
	start := time.Now()
	return reqCtx, func() {
		cancel()
		b.metrics.request.Observe(time.Since(start).Seconds())
		r.Now = time.Now()
		r.ShuttingDown = r.Err != nil && ctx.Err() != nil
		b.noteCall(r)
	}
}

// callBatch POSTs the deliveries to the function as a CloudEvents batch
// (structured-mode events in a JSON array) and reads the reply. Each event is
// the one call sends, plus its delivery attempt as the deliveryattempt
// extension. Transport failures come back in Reply.Err; Reply.Attempt is not
// set (every delivery has its own).
func (b *Bridge) callBatch(ctx context.Context, ds []*delivery) (r Reply) {
	events := make([]event.Event, len(ds))
	for i, d := range ds {
		ev, _ := b.jobEvent(d.ctx, d.d, d.jobID, d.job)
		ev.SetExtension(wire.DeliveryAttemptExtension, d.attempt)
		// In the structured format a JSON body goes in as JSON ("data"); one
		// that does not parse, or holds invalid UTF-8 that a JSON decoder
		// would replace, goes as "data_base64", byte for byte (the function
		// answers it 400), so that it cannot break the array around it.
		ev.DataBase64 = !json.Valid(d.d.Body) || !utf8.Valid(d.d.Body)
		events[i] = ev
	}

	reqCtx, done := b.request(ctx, &r)
	defer done()

	req, err := cehttp.NewHTTPRequestFromEvents(reqCtx, b.cfg.FunctionURL, events)
	if err != nil {
		r.Err = fmt.Errorf("build batch request: %w", err)
		return r
	}
	b.do(req, &r)
	return r
}

// do sends req and reads the reply into r: at most MaxReplyBytes of a 2xx
// body, maxErrorBodyBytes of any other.
func (b *Bridge) do(req *http.Request, r *Reply) {
	resp, err := b.cfg.HTTPClient.Do(req)
	if err != nil {
		r.Err = err
		return
	}
	defer resp.Body.Close()
	limit := int64(maxErrorBodyBytes)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		limit = MaxReplyBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		r.Err = fmt.Errorf("read reply (HTTP %d): %w", resp.StatusCode, err)
		return
	}
	if int64(len(body)) > limit {
		body, r.BodyTruncated = body[:limit], true
	}
	r.Status, r.Header, r.Body = resp.StatusCode, resp.Header, body
}
